//! Verified-credential cache: a token's (or an Ollama signed request's) signature is
//! checked once, then its digest maps to what the check proved until it expires.
//!
//! Ed25519 costs ~260 µs in wasm against ~0.4 µs for the rest of a decision, so repeated
//! tokens must not pay it each time. Keyed by SHA-256 of the credential (the cache never
//! holds a token), bounded, and every hit is re-checked against the current key set
//! (revoked token, revoked or expired parent key) by the caller.

use sha2::{Digest as _, Sha256};
use std::collections::HashMap;

/// What a verified signature proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// A token: its subject (parent key id), id and expiry.
    Token { sub: String, jti: String, exp: i64 },
    /// An Ollama signed request: the signing public key and the request's `ts`.
    Signed { public_key: [u8; 32], ts: i64 },
}

#[derive(Debug)]
struct Entry {
    value: Verified,
    /// Unix seconds after which the entry is useless.
    until: i64,
}

/// A bounded map from credential digest to [`Verified`].
#[derive(Debug)]
pub struct VerifiedCache {
    map: HashMap<[u8; 32], Entry>,
    cap: usize,
}

/// SHA-256 over the parts, each length-prefixed (so `("ab","c")` ≠ `("a","bc")`).
pub fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().into()
}

impl VerifiedCache {
    pub fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            cap,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The entry for `key` if it has not expired at `now` (an expired one is dropped).
    pub fn get(&mut self, key: &[u8; 32], now: i64) -> Option<&Verified> {
        let fresh = self.map.get(key).map(|e| now < e.until)?;
        if !fresh {
            self.map.remove(key);
            return None;
        }
        self.map.get(key).map(|e| &e.value)
    }

    /// Remembers `value` until `until`. When full, expired entries go first; if none
    /// expired, the whole cache is dropped (rare, and cheaper than tracking recency).
    pub fn insert(&mut self, key: [u8; 32], value: Verified, until: i64, now: i64) {
        if self.cap == 0 || until <= now {
            return;
        }
        if self.map.len() >= self.cap && !self.map.contains_key(&key) {
            self.map.retain(|_, e| now < e.until);
            if self.map.len() >= self.cap {
                self.map.clear();
            }
        }
        self.map.insert(key, Entry { value, until });
    }

    pub fn remove(&mut self, key: &[u8; 32]) {
        self.map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(n: u8) -> Verified {
        Verified::Token {
            sub: "k".into(),
            jti: format!("j{n}"),
            exp: 100,
        }
    }

    #[test]
    fn entries_expire_and_the_cache_stays_bounded() {
        let mut c = VerifiedCache::new(2);
        c.insert(digest(&[b"a"]), tok(1), 100, 10);
        assert_eq!(c.get(&digest(&[b"a"]), 99), Some(&tok(1)));
        assert_eq!(c.get(&digest(&[b"a"]), 100), None);
        assert!(c.is_empty(), "expired entry is dropped on read");
        for n in 0..10u8 {
            c.insert(digest(&[&[n]]), tok(n), 100, 10);
            assert!(c.len() <= 2);
        }
        c.insert(digest(&[b"x"]), tok(1), 5, 10);
        assert_eq!(
            c.get(&digest(&[b"x"]), 1),
            None,
            "already expired: not stored"
        );
    }

    #[test]
    fn digest_separates_parts() {
        assert_ne!(digest(&[b"ab", b"c"]), digest(&[b"a", b"bc"]));
    }
}
