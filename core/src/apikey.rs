//! API keys: `kg_` + key id + `_` + secret + checksum.
//!
//! ```text
//! kg_ 4f3k2mzq7abc _ <52 base32 chars: 256 bits from the OS CSPRNG> <6 base32 chars: CRC-32>
//! ```
//!
//! * The fixed `kg_` prefix lets secret scanners find leaked keys.
//! * The public key id (12 base32 chars, 60 bits) makes lookup O(1) and lets logs name a
//!   key without its secret.
//! * The checksum (30 bits of CRC-32 over everything before it) rejects typos and garbage
//!   before any lookup, and lets scanners drop false positives offline.
//!
//! keyd stores only [`Digest`] = SHA-256 of the whole key text. Randomness is passed in
//! (this crate does no I/O); callers fill it from the OS CSPRNG.

use crate::codec::{base32_encode, is_base32};
use crate::error::KeyReject;
use core::fmt;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

pub const PREFIX: &str = "kg_";
pub const ID_LEN: usize = 12;
pub const SECRET_LEN: usize = 52;
pub const CHECKSUM_LEN: usize = 6;
/// Total length of a key: prefix, id, separator, secret, checksum.
pub const KEY_LEN: usize = PREFIX.len() + ID_LEN + 1 + SECRET_LEN + CHECKSUM_LEN;

/// A validated key id: exactly [`ID_LEN`] lowercase base32 characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// Builds an id from 8 random bytes (60 of the 64 bits are used).
    pub fn from_random(bytes: [u8; 8]) -> Self {
        let mut s = base32_encode(&bytes);
        s.truncate(ID_LEN);
        Self(s)
    }

    /// Validates untrusted text as a key id.
    pub fn parse(s: &str) -> Result<Self, KeyReject> {
        if s.len() != ID_LEN {
            return Err(KeyReject::BadLength);
        }
        if !is_base32(s) {
            return Err(KeyReject::BadAlphabet);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// SHA-256 of a key's full text: what keyd stores and snapshots carry. Compared only in
/// constant time.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn of(text: &str) -> Self {
        Self(Sha256::digest(text.as_bytes()).into())
    }

    /// Constant-time equality: the time taken does not depend on where digests differ.
    pub fn ct_eq(&self, other: &Digest) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    pub fn to_hex(&self) -> String {
        crate::codec::hex_encode(&self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        crate::codec::hex_decode::<32>(s).map(Self)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A digest is not a secret, but a short form keeps logs readable.
        write!(
            f,
            "Digest({}…)",
            crate::codec::hex_encode(self.0.get(..4).unwrap_or(&[]))
        )
    }
}

/// A full API key, secret included. Shown once at issue or rotation; `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    id: KeyId,
    text: String,
}

impl ApiKey {
    /// Formats a new key for `id` from 32 bytes of CSPRNG output.
    pub fn generate(id: &KeyId, secret: [u8; 32]) -> Self {
        let mut text = String::with_capacity(KEY_LEN);
        text.push_str(PREFIX);
        text.push_str(id.as_str());
        text.push('_');
        text.push_str(&base32_encode(&secret));
        let sum = checksum(&text);
        text.push_str(checksum_str(&sum));
        Self {
            id: id.clone(),
            text,
        }
    }

    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// The secret text. Named so every use is visible in review.
    pub fn expose_secret(&self) -> &str {
        &self.text
    }

    pub fn digest(&self) -> Digest {
        Digest::of(&self.text)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}, <redacted>)", self.id)
    }
}

/// A syntactically valid key borrowed from a request. Parsing checks prefix, length,
/// alphabet and checksum, in that order, before anything is looked up.
#[derive(Clone, Copy)]
pub struct ParsedKey<'a> {
    text: &'a str,
}

impl fmt::Debug for ParsedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ParsedKey({}, <redacted>)", self.id())
    }
}

impl<'a> ParsedKey<'a> {
    pub fn parse(text: &'a str) -> Result<Self, KeyReject> {
        if !text.starts_with(PREFIX) {
            return Err(KeyReject::WrongPrefix);
        }
        if text.len() != KEY_LEN {
            return Err(KeyReject::BadLength);
        }
        let body_end = KEY_LEN - CHECKSUM_LEN;
        let id = text
            .get(PREFIX.len()..PREFIX.len() + ID_LEN)
            .ok_or(KeyReject::BadAlphabet)?;
        let sep = text
            .get(PREFIX.len() + ID_LEN..PREFIX.len() + ID_LEN + 1)
            .ok_or(KeyReject::BadAlphabet)?;
        let secret = text
            .get(PREFIX.len() + ID_LEN + 1..body_end)
            .ok_or(KeyReject::BadAlphabet)?;
        let sum = text.get(body_end..).ok_or(KeyReject::BadAlphabet)?;
        if sep != "_" || !is_base32(id) || !is_base32(secret) || !is_base32(sum) {
            return Err(KeyReject::BadAlphabet);
        }
        let body = text.get(..body_end).ok_or(KeyReject::BadAlphabet)?;
        // The checksum is not secret (it is derivable from the key text), so an ordinary
        // comparison is fine here; the secret itself is only ever compared as a digest.
        if checksum(body).as_slice() != sum.as_bytes() {
            return Err(KeyReject::BadChecksum);
        }
        Ok(Self { text })
    }

    pub fn id(&self) -> &'a str {
        self.text
            .get(PREFIX.len()..PREFIX.len() + ID_LEN)
            .unwrap_or("")
    }

    pub fn digest(&self) -> Digest {
        Digest::of(self.text)
    }
}

/// 30 bits of CRC-32 over the key body, as 6 base32 characters. On the stack: this runs
/// on every request that carries a key.
fn checksum(body: &str) -> [u8; CHECKSUM_LEN] {
    let crc = crc32fast::hash(body.as_bytes()) & 0x3fff_ffff;
    let mut out = [b'a'; CHECKSUM_LEN];
    for (slot, shift) in out.iter_mut().zip((0..CHECKSUM_LEN).rev()) {
        let v = (crc >> (shift * 5)) & 31;
        *slot = crate::codec::BASE32_ALPHABET
            .get(v as usize)
            .copied()
            .unwrap_or(b'a');
    }
    out
}

fn checksum_str(sum: &[u8; CHECKSUM_LEN]) -> &str {
    // Always base32 ASCII, so always UTF-8.
    core::str::from_utf8(sum).unwrap_or("aaaaaa")
}

/// True when `text` looks like an API key (by prefix), so a credential can be routed to
/// the right parser and the right rejection reason reported.
pub fn looks_like_api_key(text: &str) -> bool {
    text.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_then_parse_roundtrips() {
        let id = KeyId::from_random([1, 2, 3, 4, 5, 6, 7, 8]);
        let key = ApiKey::generate(&id, [7u8; 32]);
        assert_eq!(key.expose_secret().len(), KEY_LEN);
        let parsed = ParsedKey::parse(key.expose_secret()).unwrap();
        assert_eq!(parsed.id(), id.as_str());
        assert!(parsed.digest().ct_eq(&key.digest()));
        assert!(!format!("{key:?}").contains(&key.expose_secret()[20..]));
    }

    #[test]
    fn every_single_char_change_is_caught() {
        let id = KeyId::from_random([9; 8]);
        let key = ApiKey::generate(&id, [3u8; 32]);
        let text = key.expose_secret();
        for i in PREFIX.len()..text.len() {
            let mut bytes = text.as_bytes().to_vec();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let changed = String::from_utf8(bytes).unwrap();
            if changed == text {
                continue;
            }
            assert!(ParsedKey::parse(&changed).is_err(), "position {i}");
        }
    }
}
