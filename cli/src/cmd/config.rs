//! `keyctl config envoy|nginx|caddy`: print a ready proxy configuration.

use super::Context;
use crate::api::FilterCredential;
use crate::args::{CaddyArgs, EnvoyArgs, NginxArgs};
use crate::envoy_config::{self, EnvoyOpts};
use crate::error::{Error, Result};
use crate::nginx::PerKeyLimit;
use crate::output::Mode;
use crate::proxy::{config_path, Listen, ProxyOpts};
use crate::secret::Secret;
use crate::{caddy, nginx};
use serde::Serialize;
use std::io::Write as _;

#[derive(Debug)]
pub enum Config {
    Envoy(Envoy),
    Nginx(ProxyOpts, PerKeyLimit),
    Caddy(ProxyOpts),
}

#[derive(Debug)]
pub struct Envoy {
    proxy: ProxyOpts,
    wasm: String,
    admin: Option<Listen>,
    /// Given on the command line, or `None` to ask keyd for a new one.
    credential: Option<(Secret, Vec<String>)>,
    credential_name: String,
}

#[derive(Debug, Serialize)]
struct CredentialRequest<'a> {
    name: &'a str,
}

impl Config {
    pub fn envoy(a: EnvoyArgs) -> Result<Self> {
        let credential = match a.filter_credential {
            Some(c) if c.expose().trim().is_empty() => {
                return Err(Error::invalid("--filter-credential", "is empty"))
            }
            Some(c) => {
                if a.snapshot_keys.is_empty() {
                    return Err(Error::invalid(
                        "--filter-credential",
                        "needs --snapshot-key (keyd's snapshot public key) as well",
                    ));
                }
                let keys = a
                    .snapshot_keys
                    .iter()
                    .map(|k| snapshot_key(k))
                    .collect::<Result<_>>()?;
                Some((Secret::new(c.expose().trim()), keys))
            }
            None => None,
        };
        Ok(Self::Envoy(Envoy {
            proxy: ProxyOpts::parse(a.proxy)?,
            wasm: config_path("--wasm", &a.wasm)?,
            admin: a
                .admin
                .as_deref()
                .map(|s| Listen::parse("--admin", s))
                .transpose()?,
            credential,
            credential_name: super::policy::name(&a.credential_name).map_err(|_| {
                Error::invalid("--credential-name", "must be 1-128 printable characters")
            })?,
        }))
    }

    pub fn nginx(a: NginxArgs) -> Result<Self> {
        Ok(Self::Nginx(
            ProxyOpts::parse(a.proxy)?,
            PerKeyLimit::parse(&a.per_key_rate, a.per_key_burst)?,
        ))
    }

    pub fn caddy(a: CaddyArgs) -> Result<Self> {
        Ok(Self::Caddy(ProxyOpts::parse(a.proxy)?))
    }

    pub fn run(self, ctx: &mut Context) -> Result<()> {
        let text = match self {
            Self::Nginx(opts, limit) => nginx::render(&opts, &limit)?,
            Self::Caddy(opts) => caddy::render(&opts),
            Self::Envoy(e) => e.render(ctx)?,
        };
        ctx.out.raw(&text)?;
        ctx.out.flush()
    }
}

impl Envoy {
    fn render(self, ctx: &Context) -> Result<String> {
        let (credential, keys) = match self.credential {
            Some(c) => c,
            None => {
                let fc: FilterCredential = ctx.keyd()?.post(
                    "/v1/filter-credentials",
                    &CredentialRequest {
                        name: &self.credential_name,
                    },
                )?;
                if fc.snapshot_public_keys.is_empty() {
                    return Err(Error::Keyd(
                        "keyd sent no snapshot public key to pin; is keyd up to date?".to_owned(),
                    ));
                }
                let keys = fc
                    .snapshot_public_keys
                    .iter()
                    .map(|k| snapshot_key(k))
                    .collect::<Result<_>>()
                    .map_err(|_| {
                        Error::Keyd("keyd sent a malformed snapshot public key".to_owned())
                    })?;
                if ctx.out.mode != Mode::Quiet {
                    // stderr, so `> envoy.yaml` captures only the config.
                    let _ = writeln!(
                        std::io::stderr(),
                        "keyctl: keyd created filter credential {} ({}); it is in the config only, \
                         keep the file private",
                        fc.id, self.credential_name
                    );
                }
                (fc.credential, keys)
            }
        };
        let p = &self.proxy;
        let opts = EnvoyOpts {
            listen: p.listen.socket(),
            upstream: p.upstream.url(),
            keyd: p.keyd.iter().map(|k| k.url()).collect(),
            wasm: self.wasm,
            admin: self.admin.map(|a| a.socket()),
            snapshot_public_keys: keys,
            filter_credential: credential.expose().to_owned(),
            tls_cert: p.tls.as_ref().map(|t| t.cert.clone()),
            tls_key: p.tls.as_ref().map(|t| t.key.clone()),
            client_ca: p.tls.as_ref().and_then(|t| t.client_ca.clone()),
        };
        envoy_config::render(&opts)
            .map_err(|e| Error::Other(format!("cannot render the Envoy config: {e}")))
    }
}

/// A snapshot public key: base64url of 32 bytes (no padding), as keyd publishes it.
fn snapshot_key(s: &str) -> Result<String> {
    let s = s.trim();
    let ok = s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(Error::invalid(
            "--snapshot-key",
            "must be a base64url Ed25519 public key (43 characters), as keyd publishes it",
        ));
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_keys_are_base64url_32_bytes() {
        assert!(snapshot_key(&"A".repeat(43)).is_ok());
        assert!(snapshot_key(&"A".repeat(44)).is_err());
        assert!(snapshot_key(&format!("{}+", "A".repeat(42))).is_err());
    }
}
