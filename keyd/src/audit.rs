//! The hash-chained audit log: the canonical encoding each entry's hash covers, and the
//! verification that walks the chain and reports the first broken link.
//!
//! `hash = SHA-256("keygate-audit-v1" ‖ seq:u64 ‖ at:i64 ‖ str(action) ‖ opt(key_id) ‖
//! str(actor) ‖ str(detail) ‖ str(prev_hash))`, integers big-endian, `str` = u32 length +
//! UTF-8 bytes, `opt` = one byte 0 (absent) or 1 followed by `str`. Length prefixes make the
//! encoding unambiguous: no two different entries hash the same bytes. `detail` is hashed as
//! the exact JSON text stored (serde_json writes object keys sorted, so it is canonical).
//! The first entry's `prev_hash` is 64 zeros.

use serde::Serialize;
use sha2::{Digest as _, Sha256};

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who caused an entry.
pub mod actor {
    pub const ADMIN: &str = "admin";
    pub const EXCHANGE: &str = "exchange";
    pub const SYSTEM: &str = "system";
    pub const ANONYMOUS: &str = "anonymous";
}

/// The action names of the contract (docs/api.md).
pub mod action {
    pub const KEY_ISSUE: &str = "key.issue";
    pub const KEY_ROTATE: &str = "key.rotate";
    pub const KEY_REVOKE: &str = "key.revoke";
    pub const TOKEN_MINT: &str = "token.mint";
    pub const TOKEN_EXCHANGE: &str = "token.exchange";
    pub const PUBLICKEY_REGISTER: &str = "publickey.register";
    pub const SIGNING_KEY_ROTATE: &str = "signing_key.rotate";
    pub const FILTER_CREDENTIAL_CREATE: &str = "filter_credential.create";
    pub const ADMIN_AUTH_FAILED: &str = "admin.auth_failed";

    pub const ALL: &[&str] = &[
        KEY_ISSUE,
        KEY_ROTATE,
        KEY_REVOKE,
        TOKEN_MINT,
        TOKEN_EXCHANGE,
        PUBLICKEY_REGISTER,
        SIGNING_KEY_ROTATE,
        FILTER_CREDENTIAL_CREATE,
        ADMIN_AUTH_FAILED,
    ];
}

/// An entry to append: the store assigns `seq`, `at`, `prev_hash` and `hash`.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub action: &'static str,
    pub key_id: Option<String>,
    pub actor: &'static str,
    /// Never holds a secret: callers put ids, names, reasons and times here.
    pub detail: serde_json::Value,
}

/// A stored entry, as `/v1/audit` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: i64,
    pub at: i64,
    pub action: String,
    pub key_id: Option<String>,
    pub actor: String,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

fn put_str(h: &mut Sha256, s: &str) {
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    h.update(len.to_be_bytes());
    h.update(s.as_bytes());
}

/// The hash of an entry with these fields (see the module docs for the encoding).
pub fn entry_hash(
    seq: i64,
    at: i64,
    action: &str,
    key_id: Option<&str>,
    actor: &str,
    detail: &str,
    prev_hash: &str,
) -> String {
    let mut h = Sha256::new();
    h.update(b"keygate-audit-v1");
    h.update(seq.to_be_bytes());
    h.update(at.to_be_bytes());
    put_str(&mut h, action);
    match key_id {
        Some(k) => {
            h.update([1u8]);
            put_str(&mut h, k);
        }
        None => h.update([0u8]),
    }
    put_str(&mut h, actor);
    put_str(&mut h, detail);
    put_str(&mut h, prev_hash);
    keygate_core::codec::hex_encode(&h.finalize())
}

impl Entry {
    pub fn computed_hash(&self) -> String {
        entry_hash(
            self.seq,
            self.at,
            &self.action,
            self.key_id.as_deref(),
            &self.actor,
            &self.detail,
            &self.prev_hash,
        )
    }

    pub fn to_json(&self) -> serde_json::Value {
        let detail: serde_json::Value =
            serde_json::from_str(&self.detail).unwrap_or(serde_json::Value::Null);
        serde_json::json!({
            "seq": self.seq,
            "at": crate::timefmt::rfc3339(self.at),
            "action": self.action,
            "key_id": self.key_id,
            "actor": self.actor,
            "detail": detail,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        })
    }
}

/// Why the chain is broken at an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakReason {
    /// The entry's stored hash is not the hash of its fields: the entry was edited.
    HashMismatch,
    /// An entry is missing: sequence numbers jump, or the chain ends before the head.
    MissingEntry,
    /// The entry does not point at its predecessor's hash (the predecessor was replaced).
    PrevMismatch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Break {
    pub seq: i64,
    pub reason: BreakReason,
}

/// Incremental chain verification, so the whole log never has to be in memory.
#[derive(Debug)]
pub struct Verifier {
    expected_seq: i64,
    prev_hash: String,
    pub entries: u64,
    pub first_broken: Option<Break>,
}

impl Default for Verifier {
    fn default() -> Self {
        Self {
            expected_seq: 1,
            prev_hash: GENESIS_HASH.to_owned(),
            entries: 0,
            first_broken: None,
        }
    }
}

impl Verifier {
    /// Feeds the next entry in `seq` order. Stops judging after the first break (later
    /// entries are still counted).
    pub fn push(&mut self, e: &Entry) {
        self.entries += 1;
        if self.first_broken.is_some() {
            return;
        }
        let reason = if e.seq != self.expected_seq {
            Some(BreakReason::MissingEntry)
        } else if e.computed_hash() != e.hash {
            Some(BreakReason::HashMismatch)
        } else if e.prev_hash != self.prev_hash {
            Some(BreakReason::PrevMismatch)
        } else {
            None
        };
        if let Some(reason) = reason {
            // A gap is reported at the first missing seq, which names the deleted entry.
            let seq = if reason == BreakReason::MissingEntry {
                self.expected_seq
            } else {
                e.seq
            };
            self.first_broken = Some(Break { seq, reason });
            return;
        }
        self.expected_seq = e.seq + 1;
        self.prev_hash.clone_from(&e.hash);
    }

    /// Checks the end of the log against the chain head the store keeps, so deleting the
    /// newest entries is detected too.
    pub fn finish(&mut self, head_seq: i64, head_hash: &str) {
        if self.first_broken.is_some() {
            return;
        }
        if self.expected_seq <= head_seq {
            self.first_broken = Some(Break {
                seq: self.expected_seq,
                reason: BreakReason::MissingEntry,
            });
        } else if self.expected_seq - 1 == head_seq && self.prev_hash != head_hash {
            self.first_broken = Some(Break {
                seq: head_seq,
                reason: BreakReason::HashMismatch,
            });
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "ok": self.first_broken.is_none(),
            "entries": self.entries,
            "first_broken": self.first_broken,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<Entry> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let mut e = Entry {
                    seq,
                    at: 1000 + seq,
                    action: action::KEY_ISSUE.into(),
                    key_id: Some(format!("k{seq}")),
                    actor: actor::ADMIN.into(),
                    detail: "{}".into(),
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                e.hash = e.computed_hash();
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    fn verify(entries: &[Entry], head: &Entry) -> Option<Break> {
        let mut v = Verifier::default();
        for e in entries {
            v.push(e);
        }
        v.finish(head.seq, &head.hash);
        v.first_broken
    }

    #[test]
    fn intact_chain_verifies() {
        let c = chain(5);
        assert_eq!(verify(&c, &c[4]), None);
    }

    #[test]
    fn edited_entry_is_a_hash_mismatch_at_its_seq() {
        let mut c = chain(5);
        let head = c[4].clone();
        c[2].detail = r#"{"x":1}"#.into();
        assert_eq!(
            verify(&c, &head),
            Some(Break {
                seq: 3,
                reason: BreakReason::HashMismatch
            })
        );
    }

    #[test]
    fn deleted_entry_is_missing_at_its_seq() {
        let mut c = chain(5);
        let head = c[4].clone();
        c.remove(1);
        assert_eq!(
            verify(&c, &head),
            Some(Break {
                seq: 2,
                reason: BreakReason::MissingEntry
            })
        );
    }

    #[test]
    fn renumbered_after_delete_is_prev_mismatch() {
        let mut c = chain(5);
        let head = c[4].clone();
        c.remove(1);
        // Someone renumbers seq 3 to 2 and rehashes it: its prev_hash still names entry 2.
        c[1].seq = 2;
        c[1].hash = c[1].computed_hash();
        assert_eq!(
            verify(&c, &head),
            Some(Break {
                seq: 2,
                reason: BreakReason::PrevMismatch
            })
        );
    }

    #[test]
    fn deleted_tail_is_missing() {
        let mut c = chain(5);
        let head = c[4].clone();
        c.pop();
        assert_eq!(
            verify(&c, &head),
            Some(Break {
                seq: 5,
                reason: BreakReason::MissingEntry
            })
        );
    }

    #[test]
    fn hash_covers_every_field() {
        let e = chain(1).remove(0);
        let base = e.computed_hash();
        let mut variants = vec![];
        let mut x = e.clone();
        x.seq = 2;
        variants.push(x);
        let mut x = e.clone();
        x.at += 1;
        variants.push(x);
        let mut x = e.clone();
        x.action = "key.revoke".into();
        variants.push(x);
        let mut x = e.clone();
        x.key_id = None;
        variants.push(x);
        let mut x = e.clone();
        x.actor = "system".into();
        variants.push(x);
        let mut x = e.clone();
        x.detail = "{ }".into();
        variants.push(x);
        let mut x = e.clone();
        x.prev_hash = "1".repeat(64);
        variants.push(x);
        for v in variants {
            assert_ne!(v.computed_hash(), base, "{v:?}");
        }
    }
}
