//! `keyctl register`: a client's Ollama Ed25519 public key, so the stock `ollama` CLI
//! (`OLLAMA_AUTH=1`) reaches the gateway with no shared secret.

use super::keys::print_key;
use super::policy::{self, PolicyBody};
use super::Context;
use crate::api::Key;
use crate::args::RegisterArgs;
use crate::error::{Error, Result};
use keygate_core::ollama_sig;
use serde::Serialize;
use std::path::Path;

/// The body of `POST /v1/public-keys`.
#[derive(Debug, Serialize)]
pub struct Register {
    name: String,
    public_key: String,
    #[serde(flatten)]
    policy: PolicyBody,
}

impl Register {
    pub fn parse(a: RegisterArgs) -> Result<Self> {
        Ok(Self {
            name: policy::name(&a.name)?,
            public_key: public_key(&a.public_key)?,
            policy: PolicyBody::parse(a.policy)?,
        })
    }

    pub fn run(self, ctx: &mut Context) -> Result<()> {
        let k: Key = ctx.keyd()?.post("/v1/public-keys", &self)?;
        print_key(&mut ctx.out, &k)
    }
}

/// Accepts the authorized_keys line itself, or a path to a `.pub` file holding it.
/// Returns `ssh-ed25519 <base64> [comment]`, checked with keygate-core's parser.
fn public_key(arg: &str) -> Result<String> {
    const FLAG: &str = "--public-key";
    let arg = arg.trim();
    let text = if arg.starts_with("ssh-") || arg.starts_with(ollama_sig::PUBKEY_B64_PREFIX) {
        arg.to_owned()
    } else {
        let path = Path::new(arg);
        if !path.exists() {
            return Err(Error::invalid(
                FLAG,
                "neither an 'ssh-ed25519 AAAA…' line nor an existing file; pass \"$(cat \
                 ~/.ollama/id_ed25519.pub)\" or the path of the .pub file",
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::invalid(FLAG, format!("cannot read {}: {e}", path.display())))?;
        if text.contains("PRIVATE KEY") {
            return Err(Error::invalid(
                FLAG,
                format!(
                    "{} is a private key: pass the public one (id_ed25519.pub) and keep this \
                     one secret",
                    path.display()
                ),
            ));
        }
        text.lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .unwrap_or("")
            .to_owned()
    };
    let mut fields = text.split_whitespace();
    let first = fields.next().unwrap_or("");
    let (b64, comment) = if first == "ssh-ed25519" {
        (
            fields.next().unwrap_or(""),
            fields.collect::<Vec<_>>().join(" "),
        )
    } else if first.starts_with("ssh-") || first.starts_with("ecdsa-") {
        return Err(Error::invalid(
            FLAG,
            "only ssh-ed25519 keys are supported (Ollama's key type)",
        ));
    } else {
        (first, fields.collect::<Vec<_>>().join(" "))
    };
    ollama_sig::parse_public_key_b64(b64).map_err(|r| Error::invalid(FLAG, r))?;
    let comment: String = comment
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    Ok(if comment.is_empty() {
        format!("ssh-ed25519 {b64}")
    } else {
        format!("ssh-ed25519 {b64} {comment}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 10's first test vector.
    const PUB: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIBLJHgRwzfX+x/9E45PmoWajcmJZsz/DaZqcmG8/igMM";

    #[test]
    fn accepts_line_bare_key_and_file() {
        let line = format!("ssh-ed25519 {PUB} alice@laptop");
        assert_eq!(public_key(&line).unwrap(), line);
        assert_eq!(public_key(PUB).unwrap(), format!("ssh-ed25519 {PUB}"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("id_ed25519.pub");
        std::fs::write(&f, format!("{line}\n")).unwrap();
        assert_eq!(public_key(f.to_str().unwrap()).unwrap(), line);
    }

    #[test]
    fn rejects_private_keys_other_types_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("id_ed25519");
        std::fs::write(&f, "-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n").unwrap();
        let e = public_key(f.to_str().unwrap()).unwrap_err();
        assert!(e.to_string().contains("private key"), "{e}");
        assert_eq!(
            public_key("ssh-rsa AAAAB3Nza x").unwrap_err().exit_code(),
            2
        );
        assert_eq!(
            public_key("ssh-ed25519 AAAAnotakey")
                .unwrap_err()
                .exit_code(),
            2
        );
        assert_eq!(public_key("/no/such/file.pub").unwrap_err().exit_code(), 2);
    }
}
