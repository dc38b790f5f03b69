//! `keyctl signing-key rotate`: a new token or snapshot signing key in keyd.

use super::Context;
use crate::api::SigningKeyRotated;
use crate::args::Which;
use crate::error::Result;
use crate::output::Mode;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Rotate {
    which: &'static str,
}

impl Rotate {
    pub fn new(which: Which) -> Self {
        Self {
            which: match which {
                Which::Token => "token",
                Which::Snapshot => "snapshot",
            },
        }
    }

    pub fn run(self, ctx: &mut Context) -> Result<()> {
        let r: SigningKeyRotated = ctx.keyd()?.post("/v1/signing-keys/rotate", &self)?;
        let out = &mut ctx.out;
        match out.mode {
            Mode::Json => out.json(&r)?,
            Mode::Quiet => out.line(r.kid.as_deref().unwrap_or(&r.public_key))?,
            Mode::Human => {
                let kid = r
                    .kid
                    .as_deref()
                    .map(|k| format!(" (kid {k})"))
                    .unwrap_or_default();
                out.line(&format!("Rotated the {} signing key{kid}.", r.which))?;
                out.line(&format!("new public key  {}", r.public_key))?;
                if r.which == "snapshot" {
                    out.line(
                        "Proxies pin snapshot keys: regenerate their configs (keyctl config envoy) \
                         before the old key's retention ends.",
                    )?;
                } else {
                    out.line("Tokens signed with the old key keep verifying until they expire.")?;
                }
            }
        }
        out.flush()
    }
}
