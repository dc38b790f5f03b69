//! The in-memory state every decision and snapshot is made from: all key records in a
//! keygate-core [`MemStore`], plus a change index (version → key id) so a delta since any
//! version is "the current records of the keys changed after it".
//!
//! It is filled from the database at start and kept current by loading the rows whose
//! `version` is newer than the one held — the same step whether the change was made by this
//! process or by another keyd on the same database (woken by NOTIFY or the periodic check).

use crate::store::{KeyRow, SigningKeyRow};
use keygate_core::codec::hex_decode;
use keygate_core::ed25519_dalek::VerifyingKey;
use keygate_core::policy::{self, Policy, RouteSet};
use keygate_core::ratelimit::{Burst, Rate, RateSpec};
use keygate_core::snapshot::{
    Delta, KeyKind, KeyRecord, KeyStatus, KeyStore as _, MemStore, Previous, SigningPub, Snapshot,
    SnapshotSigner,
};
use keygate_core::token::TokenSigner;
use std::collections::{BTreeSet, HashMap};

pub const KIND_API_KEY: &str = "api_key";
pub const KIND_OLLAMA_KEY: &str = "ollama_key";

/// Converts a stored row into the record filters see. Fails on a row keyd could not have
/// written; the caller leaves such a key out (it is then denied everywhere).
pub fn record_from_row(r: &KeyRow) -> Result<KeyRecord, String> {
    let kind = match r.kind.as_str() {
        KIND_API_KEY => KeyKind::ApiKey,
        KIND_OLLAMA_KEY => KeyKind::OllamaKey,
        _ => return Err("unknown kind".into()),
    };
    let digest = hex_decode::<32>(&r.digest).ok_or("bad digest")?;
    let previous = match (&r.prev_digest, r.prev_valid_until) {
        (Some(d), Some(until)) => Some(Previous {
            digest: hex_decode::<32>(d).ok_or("bad previous digest")?,
            valid_until: until,
        }),
        _ => None,
    };
    let status = match r.status.as_str() {
        "active" => KeyStatus::Active,
        "revoked" => KeyStatus::Revoked,
        _ => return Err("unknown status".into()),
    };
    let models: Vec<String> = serde_json::from_str(&r.models).map_err(|_| "bad models")?;
    let models = policy::parse_models(&models)?;
    let rate = match &r.rate {
        Some(spec) => {
            let spec = RateSpec::parse(spec)?;
            let burst = r
                .burst
                .map(|b| {
                    u32::try_from(b)
                        .map_err(|_| "bad burst")
                        .and_then(Burst::try_new)
                })
                .transpose()?;
            Some(Rate::new(spec, burst))
        }
        None => None,
    };
    let routes = u8::try_from(r.routes).map_err(|_| "bad routes")?;
    Ok(KeyRecord {
        id: r.id.clone(),
        name: r.name.clone(),
        kind,
        digest,
        previous,
        status,
        expires_at: r.expires_at,
        policy: Policy {
            routes: RouteSet::from_bits(routes),
            models,
            rate,
        },
    })
}

#[derive(Debug, Default)]
pub struct Live {
    pub mem: MemStore,
    /// `(version of last change, key id)` for every key: a delta since V is the range
    /// after `(V, "")`.
    changes: BTreeSet<(u64, String)>,
    versions: HashMap<String, u64>,
    /// The token-signing keys given to `mem` (MemStore does not enumerate them).
    signing: Vec<SigningPub>,
}

/// Puts a snapshot in canonical order (keys by id): equal states encode to equal bytes.
pub fn canonical(mut s: Snapshot) -> Snapshot {
    s.keys.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    s.revoked_tokens.sort_unstable_by(|a, b| a.jti.cmp(&b.jti));
    s
}

/// Counts for `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyCounts {
    pub active: u64,
    pub revoked: u64,
    pub expired: u64,
}

impl Live {
    pub fn version(&self) -> u64 {
        self.mem.version
    }

    /// Applies changed rows. Returns how many rows were left out as corrupt.
    pub fn apply_rows(&mut self, rows: &[KeyRow]) -> usize {
        let mut bad = 0;
        for row in rows {
            let version = u64::try_from(row.version).unwrap_or(0);
            match record_from_row(row) {
                Ok(rec) => self.mem.upsert(rec),
                Err(why) => {
                    tracing::error!(key_id = %row.id, why, "stored key is corrupt; it is left out and denied");
                    self.mem.remove(&row.id);
                    bad += 1;
                }
            }
            if let Some(old) = self.versions.insert(row.id.clone(), version) {
                self.changes.remove(&(old, row.id.clone()));
            }
            self.changes.insert((version, row.id.clone()));
        }
        bad
    }

    /// Replaces the token-signing keys that snapshots carry and tokens are checked with.
    pub fn set_signing_keys(&mut self, keys: Vec<SigningPub>) -> Result<(), String> {
        self.mem
            .set_signing_keys(keys.clone())
            .map_err(|e| e.to_string())?;
        self.signing = keys;
        Ok(())
    }

    /// The current state as a full snapshot, not yet in canonical order: only the clone
    /// happens under the caller's read lock; [`canonical`] sorts outside it.
    pub fn full_unsorted(&self) -> Snapshot {
        Snapshot {
            version: self.mem.version,
            issued_at: self.mem.issued_at,
            signing_keys: self.signing.clone(),
            keys: self.mem.records().cloned().collect(),
            revoked_tokens: Vec::new(),
        }
    }

    /// The current state as a canonical full snapshot.
    pub fn full(&self) -> Snapshot {
        canonical(self.full_unsorted())
    }

    /// The delta from `since` to the held version, or `None` when a full snapshot is the
    /// better answer (no base, a base from the future, or most keys changed).
    pub fn delta_since(&self, since: u64) -> Option<Delta> {
        let version = self.version();
        if since == 0 || since >= version {
            return None;
        }
        let changed: Vec<&String> = self
            .changes
            .range((since + 1, String::new())..)
            .map(|(_, id)| id)
            .collect();
        if changed.len() > 1000 && changed.len() > self.mem.len() / 2 {
            return None;
        }
        let mut upserts = Vec::with_capacity(changed.len());
        let mut removed = Vec::new();
        for id in changed {
            match self.mem.key(id) {
                Some(rec) => upserts.push(rec.into_owned()),
                None => removed.push(id.clone()),
            }
        }
        upserts.sort_by(|a, b| a.id.cmp(&b.id));
        Some(Delta {
            base: since,
            version,
            issued_at: self.mem.issued_at,
            signing_keys: self.signing.clone(),
            upserts,
            removed,
            revoked_added: Vec::new(),
            revoked_removed: Vec::new(),
        })
    }

    pub fn counts(&self, now: i64) -> KeyCounts {
        let mut c = KeyCounts::default();
        for r in self.mem.records() {
            if r.status == KeyStatus::Revoked {
                c.revoked += 1;
            } else if r.expires_at.is_some_and(|t| t <= now) {
                c.expired += 1;
            } else {
                c.active += 1;
            }
        }
        c
    }
}

/// Signing keys of the current database state.
#[derive(Debug)]
pub struct Signers {
    pub token: TokenSigner,
    pub snapshot: SnapshotSigner,
    /// Token-signing public keys: current first, then retired ones still retained, with
    /// the time each was retired (`None` for the current one).
    pub token_pubs: Vec<(SigningPub, Option<i64>)>,
    /// Snapshot-signing public keys, same order and meaning.
    pub snapshot_pubs: Vec<(VerifyingKey, Option<i64>)>,
}

impl Signers {
    /// Builds the signers from stored rows: the current key of each kind signs; retired
    /// keys are published until `retired_at + retention`.
    pub fn from_rows(rows: &[SigningKeyRow], now: i64, retention: i64) -> Result<Self, String> {
        let retained = |r: &SigningKeyRow| {
            r.retired_at
                .is_none_or(|t| t.saturating_add(retention) > now)
        };
        let mut token = None;
        let mut snapshot = None;
        let mut token_pubs = Vec::new();
        let mut snapshot_pubs = Vec::new();
        // Newest first, so the current key leads each list.
        for r in rows.iter().rev().filter(|r| retained(r)) {
            let public: [u8; 32] = hex_decode(&r.public_key).ok_or("bad public key")?;
            match r.which.as_str() {
                "token" => {
                    if r.retired_at.is_none() && token.is_none() {
                        let seed = hex_decode::<32>(&r.seed).ok_or("bad seed")?;
                        token = Some(TokenSigner::from_seed(r.kid.clone(), seed));
                    }
                    token_pubs.push((
                        SigningPub {
                            kid: r.kid.clone(),
                            key: public,
                        },
                        r.retired_at,
                    ));
                }
                "snapshot" => {
                    if r.retired_at.is_none() && snapshot.is_none() {
                        let seed = hex_decode::<32>(&r.seed).ok_or("bad seed")?;
                        snapshot = Some(SnapshotSigner::from_seed(seed));
                    }
                    let key = VerifyingKey::from_bytes(&public).map_err(|_| "bad public key")?;
                    snapshot_pubs.push((key, r.retired_at));
                }
                _ => return Err("unknown signing key kind".into()),
            }
        }
        token_pubs.sort_by_key(|(_, retired)| retired.map_or(i64::MIN, |t| -t));
        snapshot_pubs.sort_by_key(|(_, retired)| retired.map_or(i64::MIN, |t| -t));
        Ok(Self {
            token: token.ok_or("no current token-signing key")?,
            snapshot: snapshot.ok_or("no current snapshot-signing key")?,
            token_pubs,
            snapshot_pubs,
        })
    }

    /// Token public keys to publish at `now` (JWKS and snapshots).
    pub fn published_token_keys(&self, now: i64, retention: i64) -> Vec<SigningPub> {
        self.token_pubs
            .iter()
            .filter(|(_, r)| r.is_none_or(|t| t.saturating_add(retention) > now))
            .map(|(p, _)| p.clone())
            .collect()
    }

    pub fn published_snapshot_keys(&self, now: i64, retention: i64) -> Vec<VerifyingKey> {
        self.snapshot_pubs
            .iter()
            .filter(|(_, r)| r.is_none_or(|t| t.saturating_add(retention) > now))
            .map(|(k, _)| *k)
            .collect()
    }
}
