//! `keyctl issue`: a new API key, printed once.

use super::policy::{self, PolicyBody};
use super::Context;
use crate::api::{IssueOutput, IssuedKey};
use crate::args::IssueArgs;
use crate::error::Result;
use crate::output::{list_or, Mode};
use serde::Serialize;

/// The body of `POST /v1/keys`.
#[derive(Debug, Serialize)]
pub struct Issue {
    name: String,
    #[serde(flatten)]
    policy: PolicyBody,
}

impl Issue {
    pub fn parse(a: IssueArgs) -> Result<Self> {
        Ok(Self {
            name: policy::name(&a.name)?,
            policy: PolicyBody::parse(a.policy)?,
        })
    }

    pub fn run(self, ctx: &mut Context) -> Result<()> {
        let issued: IssuedKey = ctx.keyd()?.post("/v1/keys", &self)?;
        let k = &issued.info;
        let out = &mut ctx.out;
        match out.mode {
            Mode::Json => out.json(&IssueOutput {
                id: &k.id,
                key: &issued.key,
                name: &k.name,
                routes: &k.routes,
                models: &k.models,
                rate: k.rate.as_deref(),
                burst: k.burst,
                expires_at: k.expires_at.as_deref(),
            })?,
            Mode::Quiet => out.line(issued.key.expose())?,
            Mode::Human => {
                out.line(&format!("Issued key {} ({})", k.id, k.name))?;
                out.line(&format!("  routes   {}", list_or(&k.routes, "-")))?;
                out.line(&format!(
                    "  models   {}",
                    list_or(&k.models, "all local models")
                ))?;
                out.line(&format!("  rate     {}", super::keys::rate_text(k)))?;
                out.line(&format!(
                    "  expires  {}",
                    k.expires_at.as_deref().unwrap_or("never")
                ))?;
                out.line(
                    "Store this key now: keyd keeps only its digest and cannot show it again.",
                )?;
                out.line(issued.key.expose())?;
            }
        }
        out.flush()
    }
}
