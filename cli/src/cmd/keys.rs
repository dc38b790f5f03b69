//! Commands on one key: `show`, `rotate`, `revoke`, `token`.

use super::{key_id, plain_text, Context};
use crate::api::{Key, Minted, Revoked, Rotated};
use crate::args::{RevokeArgs, RotateArgs, ShowArgs, TokenArgs};
use crate::error::{Error, Result};
use crate::output::{list_or, Mode, Out};
use keygate_core::apikey::KeyId;
use keygate_core::duration::Duration;
use serde::Serialize;

/// `10/s (burst 20)`, or `unlimited`.
pub fn rate_text(k: &Key) -> String {
    match (&k.rate, k.burst) {
        (Some(r), Some(b)) => format!("{r} (burst {b})"),
        (Some(r), None) => r.clone(),
        (None, _) => "unlimited".to_owned(),
    }
}

/// Prints one key in the current mode (`show`, `register`).
pub fn print_key(out: &mut Out, k: &Key) -> Result<()> {
    match out.mode {
        Mode::Json => out.json(k)?,
        Mode::Quiet => out.line(&k.id)?,
        Mode::Human => {
            let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
            let rows = [
                ("id", k.id.clone()),
                ("kind", k.kind.clone()),
                ("name", k.name.clone()),
                ("status", k.status.clone()),
                ("routes", list_or(&k.routes, "-")),
                ("models", list_or(&k.models, "all local models")),
                ("rate", rate_text(k)),
                (
                    "expires",
                    k.expires_at.clone().unwrap_or_else(|| "never".to_owned()),
                ),
                ("created", or_dash(&k.created_at)),
                ("rotated", or_dash(&k.rotated_at)),
                ("old valid until", or_dash(&k.old_valid_until)),
                ("revoked", or_dash(&k.revoked_at)),
                ("revoke reason", or_dash(&k.revoke_reason)),
            ];
            for (label, value) in rows {
                let value: String = value
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                out.line(&format!("{label:<16}{value}"))?;
            }
        }
    }
    out.flush()
}

#[derive(Debug)]
pub struct Show {
    id: KeyId,
}

impl Show {
    pub fn parse(a: ShowArgs) -> Result<Self> {
        Ok(Self {
            id: key_id("ID", &a.id)?,
        })
    }

    pub fn run(self, ctx: &mut Context) -> Result<()> {
        let k: Key = ctx.keyd()?.get(&format!("/v1/keys/{}", self.id), &[])?;
        print_key(&mut ctx.out, &k)
    }
}

#[derive(Debug)]
pub struct Rotate {
    id: KeyId,
    body: RotateBody,
}

#[derive(Debug, Serialize)]
struct RotateBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    grace: Option<String>,
}

impl Rotate {
    pub fn parse(a: RotateArgs) -> Result<Self> {
        let grace = a
            .grace
            .as_deref()
            .map(|g| {
                Duration::parse(g).map_err(|r| {
                    Error::invalid(
                        "--grace",
                        format!("{r} (to stop the old secret now, use 'keyctl revoke')"),
                    )
                })
            })
            .transpose()?;
        Ok(Self {
            id: key_id("ID", &a.id)?,
            body: RotateBody {
                grace: grace.map(|d| d.to_string()),
            },
        })
    }

    pub fn run(self, ctx: &mut Context) -> Result<()> {
        let r: Rotated = ctx
            .keyd()?
            .post(&format!("/v1/keys/{}/rotate", self.id), &self.body)?;
        let out = &mut ctx.out;
        match out.mode {
            Mode::Json => out.json(&r)?,
            Mode::Quiet => out.line(r.key.expose())?,
            Mode::Human => {
                let until = r.old_valid_until.as_deref().unwrap_or("now");
                out.line(&format!(
                    "Rotated key {}: the old secret keeps working until {until}.",
                    r.id
                ))?;
                out.line(
                    "Store the new key now: keyd keeps only its digest and cannot show it again.",
                )?;
                out.line(r.key.expose())?;
            }
        }
        out.flush()
    }
}

#[derive(Debug)]
pub struct Revoke {
    id: KeyId,
    body: RevokeBody,
}

#[derive(Debug, Serialize)]
struct RevokeBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl Revoke {
    pub fn parse(a: RevokeArgs) -> Result<Self> {
        let reason = a
            .reason
            .as_deref()
            .map(|r| plain_text("--reason", r, 1024))
            .transpose()?;
        Ok(Self {
            id: key_id("ID", &a.id)?,
            body: RevokeBody { reason },
        })
    }

    pub fn run(self, ctx: &mut Context) -> Result<()> {
        let r: Revoked = ctx
            .keyd()?
            .post(&format!("/v1/keys/{}/revoke", self.id), &self.body)?;
        let out = &mut ctx.out;
        match out.mode {
            Mode::Json => out.json(&r)?,
            Mode::Quiet => out.line(&r.id)?,
            Mode::Human => out.line(&format!(
                "Revoked key {}: proxies refuse it (and its tokens) within about a second.",
                r.id
            ))?,
        }
        out.flush()
    }
}

#[derive(Debug)]
pub struct Token {
    id: KeyId,
    body: TokenBody,
}

#[derive(Debug, Serialize)]
struct TokenBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<String>,
}

impl Token {
    pub fn parse(a: TokenArgs) -> Result<Self> {
        let ttl = a
            .ttl
            .as_deref()
            .map(Duration::parse)
            .transpose()
            .map_err(|r| Error::invalid("--ttl", r))?;
        Ok(Self {
            id: key_id("ID", &a.id)?,
            body: TokenBody {
                ttl: ttl.map(|d| d.to_string()),
            },
        })
    }

    pub fn run(self, ctx: &mut Context) -> Result<()> {
        let t: Minted = ctx
            .keyd()?
            .post(&format!("/v1/keys/{}/tokens", self.id), &self.body)?;
        let out = &mut ctx.out;
        match out.mode {
            Mode::Json => out.json(&t)?,
            Mode::Quiet => out.line(t.token.expose())?,
            Mode::Human => {
                out.line(t.token.expose())?;
                out.line(&format!("expires {}", t.expires_at))?;
            }
        }
        out.flush()
    }
}
