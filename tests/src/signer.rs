//! Ollama's request signing (`OLLAMA_AUTH=1`), reproduced from the CLI's steps so the tests
//! sign exactly like the stock `ollama` client: read the OpenSSH private key, sign
//! `METHOD,PATH?ts=NOW` with Ed25519, send `Authorization: <ssh-pub-b64>:<sig-b64>` to
//! `PATH?ts=NOW`.

use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (h, t) = b.split_at(n);
    *b = t;
    Some(h)
}

fn u32_(b: &mut &[u8]) -> Option<u32> {
    take(b, 4).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn string<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let n = u32_(b)? as usize;
    take(b, n)
}

/// Parses an unencrypted OpenSSH ed25519 private key (what `~/.ollama/id_ed25519` holds).
pub fn parse_openssh_private_key(pem: &str) -> Option<SigningKey> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    let raw = B64.decode(body).ok()?;
    let mut b = raw.as_slice();
    if take(&mut b, 15)? != b"openssh-key-v1\0" {
        return None;
    }
    if string(&mut b)? != b"none" || string(&mut b)? != b"none" {
        return None; // encrypted keys are not used in tests
    }
    let _kdf_options = string(&mut b)?;
    if u32_(&mut b)? != 1 {
        return None;
    }
    let _public = string(&mut b)?;
    let mut private = string(&mut b)?;
    let (c1, c2) = (u32_(&mut private)?, u32_(&mut private)?);
    if c1 != c2 || string(&mut private)? != b"ssh-ed25519" {
        return None;
    }
    let _pub = string(&mut private)?;
    let keypair = string(&mut private)?;
    let seed: [u8; 32] = keypair.get(..32)?.try_into().ok()?;
    Some(SigningKey::from_bytes(&seed))
}

/// The authorized_keys field: base64 of the SSH wire blob of the public key.
pub fn public_key_b64(sk: &SigningKey) -> String {
    let mut blob = Vec::with_capacity(51);
    blob.extend_from_slice(&11u32.to_be_bytes());
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&32u32.to_be_bytes());
    blob.extend_from_slice(sk.verifying_key().as_bytes());
    B64.encode(blob)
}

/// The `~/.ollama/id_ed25519.pub` line.
pub fn authorized_key_line(sk: &SigningKey) -> String {
    format!("ssh-ed25519 {} test@keygate", public_key_b64(sk))
}

/// The `Authorization` value the CLI sends for `method` `path` at `ts`.
pub fn authorization(sk: &SigningKey, method: &str, path: &str, ts: i64) -> String {
    let msg = format!("{method},{path}?ts={ts}");
    let sig = sk.sign(msg.as_bytes());
    format!("{}:{}", public_key_b64(sk), B64.encode(sig.to_bytes()))
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}
