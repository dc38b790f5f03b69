//! The filter's state in proxy-wasm shared data, visible to every worker of one Envoy.
//!
//! Layout (one entry per key id, so the key set is held once per Envoy, not once per worker,
//! and a request reads exactly one record):
//!
//! | entry | value |
//! |---|---|
//! | `kg:meta` | [`Meta`]: version, issue time, last contact with keyd, token signing keys |
//! | `kg:k:<id>` | one [`KeyRecord::to_bytes`] |
//! | `kg:jti:<jti>` | a revoked token id: its `exp` (8 bytes) |
//! | `kg:index` | every key id present (used to drop keys a full snapshot no longer has) |
//! | `kg:lease` | which worker runs the sync loop, and until when |
//! | `kg:workers` | counter handing out worker numbers |
//! | `kg:rl:<id>` | a key's GCRA limiter state (8 bytes, compare-and-swap) |
//! | `kg:fb:<addr>` | an address's failure-backoff state (compare-and-swap) |
//! | `kg:fb:active` | when the latest lockout of any address ends (µs, 8 bytes) |
//! | `kg:alive:<n>` | when worker `n` last ticked (µs, 8 bytes) |
//!
//! An empty value means "absent": ABI 0.2.1 cannot delete entries.
//!
//! Workers keep what they read per snapshot version ([`crate::keycache`]) and learn of
//! changes without any per-request cost: every worker registers the shared queue
//! `kg:q:<n>`, and whoever writes a new version or a lockout enqueues a note on the queue
//! of every live worker ([`notify_workers`]); the proxy then calls that worker's
//! `on_queue_ready` on its own thread, within microseconds. Each tick re-reads too, so a
//! lost note delays a worker by one tick at most.
//!
//! A snapshot is verified and decoded whole before the first write (a bad one is never
//! half-applied); records are then written one by one, each atomically, and `kg:meta`
//! last, so a reader sees every record at its old or new state, never a torn one.

use crate::host::{Host, SetError};
use keygate_core::codec::{Cursor, Writer};
use keygate_core::ed25519_dalek::VerifyingKey;
use keygate_core::snapshot::{KeyRecord, KeyStore, Payload, SigningPub};
use keygate_core::SnapshotReject;
use std::borrow::Cow;
use std::collections::HashSet;

pub const META: &str = "kg:meta";
pub const INDEX: &str = "kg:index";
pub const LEASE: &str = "kg:lease";
pub const WORKERS: &str = "kg:workers";
pub const FAILURE_ACTIVE: &str = "kg:fb:active";

/// The most workers [`notify_workers`] looks at (worker numbers also count VMs replaced by
/// configuration reloads).
pub const MAX_WORKERS: u32 = 4096;
/// A worker that has not ticked for this long is gone (its VM was replaced): it is not
/// notified, so nothing piles up in a queue nobody reads.
pub const ALIVE_US: u64 = 2_000_000;

pub fn key_entry(id: &str) -> String {
    format!("kg:k:{id}")
}

pub fn jti_entry(jti: &str) -> String {
    format!("kg:jti:{jti}")
}

pub fn rate_entry(id: &str) -> String {
    format!("kg:rl:{id}")
}

pub fn failure_entry(addr: &str) -> String {
    format!("kg:fb:{addr}")
}

pub fn queue_name(worker: u32) -> String {
    format!("kg:q:{worker}")
}

pub fn alive_entry(worker: u32) -> String {
    format!("kg:alive:{worker}")
}

/// Records that `worker` is alive at `now_us` (each tick).
pub fn heartbeat<H: Host + ?Sized>(host: &H, worker: u32, now_us: u64) {
    let _ = host.shared_set(&alive_entry(worker), &now_us.to_be_bytes(), None);
}

/// Tells every live worker to re-read shared data (a new snapshot version, a lockout).
/// Called after the state it announces is written, so the worker that re-reads finds it.
pub fn notify_workers<H: Host + ?Sized>(host: &H, vm_id: &str, now_us: u64) {
    let workers = read_u32(host, WORKERS).unwrap_or(0).min(MAX_WORKERS);
    for n in 1..=workers {
        let alive =
            read_u64(host, &alive_entry(n)).is_some_and(|t| now_us.saturating_sub(t) <= ALIVE_US);
        if !alive {
            continue;
        }
        if let Some(q) = host.queue_resolve(vm_id, &queue_name(n)) {
            host.queue_enqueue(q, b"r");
        }
    }
}

/// When the latest lockout of any address ends (µs; 0 when none was recorded).
pub fn lockouts_until<H: Host + ?Sized>(host: &H) -> u64 {
    read_u64(host, FAILURE_ACTIVE).unwrap_or(0)
}

/// A big-endian number entry (`kg:workers`, `kg:alive:<n>`, `kg:fb:active`).
fn read_u32<H: Host + ?Sized>(host: &H, key: &str) -> Option<u32> {
    host.shared_get(key)
        .bytes()
        .and_then(|b| Cursor::new(b).u32())
}

fn read_u64<H: Host + ?Sized>(host: &H, key: &str) -> Option<u64> {
    host.shared_get(key)
        .bytes()
        .and_then(|b| Cursor::new(b).u64())
}

/// Records that some address is locked out until `until_us` (the caller then notifies
/// the workers).
pub fn publish_lockout<H: Host + ?Sized>(host: &H, until_us: u64) {
    cas_update(host, FAILURE_ACTIVE, |cur| {
        let held = cur.and_then(|b| Cursor::new(b).u64()).unwrap_or(0);
        (
            (until_us > held).then(|| until_us.to_be_bytes().to_vec()),
            (),
        )
    });
}

/// Snapshot-wide facts, written last on every apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub version: u64,
    pub issued_at: i64,
    /// When the sync loop last heard from keyd (a snapshot, a delta or a 304), in µs.
    pub last_ok_us: u64,
    pub signing: Vec<SigningPub>,
}

impl Meta {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(32 + self.signing.len() * 48);
        w.u64(self.version);
        w.i64(self.issued_at);
        w.u64(self.last_ok_us);
        w.len16(self.signing.len());
        for k in &self.signing {
            w.str8(&k.kid);
            w.bytes(&k.key);
        }
        w.buf
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut c = Cursor::new(bytes);
        let version = c.u64()?;
        let issued_at = c.i64()?;
        let last_ok_us = c.u64()?;
        let n = c.count16(33)?;
        let mut signing = Vec::with_capacity(n);
        for _ in 0..n {
            signing.push(SigningPub {
                kid: c.str8()?.to_owned(),
                key: c.array::<32>()?,
            });
        }
        c.is_empty().then_some(Self {
            version,
            issued_at,
            last_ok_us,
            signing,
        })
    }

    pub fn read<H: Host + ?Sized>(host: &H) -> Option<Self> {
        host.shared_get(META).bytes().and_then(Self::decode)
    }
}

/// A worker's decoded copy of `kg:meta`, refreshed when the entry's CAS changes, so the
/// token signing keys are decoded once per change rather than once per request.
#[derive(Debug, Default)]
pub struct View {
    cas: Option<u32>,
    pub meta: Option<Meta>,
    pub signing: Vec<(String, VerifyingKey)>,
}

impl View {
    /// The snapshot version this worker holds.
    pub fn version(&self) -> Option<u64> {
        self.meta.as_ref().map(|m| m.version)
    }

    /// Re-reads `kg:meta`; returns true when it changed.
    pub fn refresh<H: Host + ?Sized>(&mut self, host: &H) -> bool {
        let v = host.shared_get(META);
        if v.cas.is_some() && v.cas == self.cas && self.meta.is_some() {
            return false;
        }
        self.cas = v.cas;
        self.meta = v.bytes().and_then(Meta::decode);
        self.signing = self
            .meta
            .iter()
            .flat_map(|m| m.signing.iter())
            .filter_map(|k| {
                VerifyingKey::from_bytes(&k.key)
                    .ok()
                    .map(|v| (k.kid.clone(), v))
            })
            .collect();
        true
    }
}

/// [`KeyStore`] over shared data: one entry read per lookup, nothing held per worker.
pub struct SharedStore<'a, H: Host + ?Sized> {
    pub host: &'a H,
    pub signing: &'a [(String, VerifyingKey)],
}

impl<H: Host + ?Sized> core::fmt::Debug for SharedStore<'_, H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SharedStore")
            .field("signing", &self.signing.len())
            .finish_non_exhaustive()
    }
}

impl<H: Host + ?Sized> KeyStore for SharedStore<'_, H> {
    fn key(&self, id: &str) -> Option<Cow<'_, KeyRecord>> {
        let v = self.host.shared_get(&key_entry(id));
        v.bytes()
            .and_then(KeyRecord::from_bytes)
            .filter(|r| r.id == id)
            .map(Cow::Owned)
    }

    fn signing_key(&self, kid: &str) -> Option<VerifyingKey> {
        self.signing.iter().find(|(k, _)| k == kid).map(|(_, v)| *v)
    }

    fn token_revoked(&self, jti: &str) -> bool {
        self.host.shared_get(&jti_entry(jti)).bytes().is_some()
    }
}

fn read_index<H: Host + ?Sized>(host: &H) -> Vec<String> {
    let v = host.shared_get(INDEX);
    let Some(bytes) = v.bytes() else {
        return Vec::new();
    };
    let mut c = Cursor::new(bytes);
    let Some(n) = c.count32(1) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        match c.str8() {
            Some(s) => out.push(s.to_owned()),
            None => break,
        }
    }
    out
}

/// Why an apply did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyError {
    /// The payload does not fit the held state (counted; the next fetch asks for a full one).
    Rejected(SnapshotReject),
    /// Shared data refused a write.
    Write,
}

/// A verified payload turned into shared-data writes, applied in batches so a large
/// snapshot never stalls the worker that applies it: records first, then the index, then
/// `kg:meta` (which makes the new version current).
#[derive(Debug)]
pub struct Plan {
    writes: std::vec::IntoIter<(String, Vec<u8>)>,
    index: Option<Vec<u8>>,
    meta: Vec<u8>,
    pub version: u64,
    /// Number of record, removal and token writes.
    pub len: usize,
}

fn encode_index(ids: &HashSet<String>) -> Vec<u8> {
    let mut w = Writer::with_capacity(4 + ids.len() * 14);
    w.len32(ids.len());
    for id in ids {
        w.str8(id);
    }
    w.buf
}

/// Checks `payload` against the held state and lists the writes that apply it. Nothing is
/// written here: a payload that does not fit is refused whole.
pub fn plan<H: Host + ?Sized>(host: &H, payload: Payload, now_us: u64) -> Result<Plan, ApplyError> {
    let held = Meta::read(host);
    let held_version = held.as_ref().map_or(0, |m| m.version);
    let signing_ok = |keys: &[SigningPub]| {
        keys.iter()
            .all(|k| VerifyingKey::from_bytes(&k.key).is_ok())
    };
    let mut writes = Vec::new();
    let (index, meta) = match payload {
        Payload::Full(s) => {
            if held.is_some() && s.version <= held_version {
                return Err(ApplyError::Rejected(SnapshotReject::NotNewer));
            }
            if !signing_ok(&s.signing_keys) {
                return Err(ApplyError::Rejected(SnapshotReject::Malformed));
            }
            let new_ids: HashSet<String> = s.keys.iter().map(|k| k.id.clone()).collect();
            writes.reserve(s.keys.len() + s.revoked_tokens.len());
            for k in &s.keys {
                writes.push((key_entry(&k.id), k.to_bytes()));
            }
            for old in read_index(host) {
                if !new_ids.contains(&old) {
                    writes.push((key_entry(&old), Vec::new()));
                }
            }
            for t in &s.revoked_tokens {
                writes.push((jti_entry(&t.jti), t.exp.to_be_bytes().to_vec()));
            }
            let meta = Meta {
                version: s.version,
                issued_at: s.issued_at,
                last_ok_us: now_us,
                signing: s.signing_keys,
            };
            (Some(encode_index(&new_ids)), meta)
        }
        Payload::Delta(d) => {
            if held.is_none() || d.base != held_version {
                return Err(ApplyError::Rejected(SnapshotReject::BaseMismatch));
            }
            if d.version < held_version
                || (d.version == held_version
                    && !(d.upserts.is_empty()
                        && d.removed.is_empty()
                        && d.revoked_added.is_empty()
                        && d.revoked_removed.is_empty()))
            {
                return Err(ApplyError::Rejected(SnapshotReject::NotNewer));
            }
            if !signing_ok(&d.signing_keys) {
                return Err(ApplyError::Rejected(SnapshotReject::Malformed));
            }
            let mut ids: Option<HashSet<String>> = None;
            for k in &d.upserts {
                let entry = key_entry(&k.id);
                if host.shared_get(&entry).bytes().is_none() {
                    ids.get_or_insert_with(|| read_index(host).into_iter().collect())
                        .insert(k.id.clone());
                }
                writes.push((entry, k.to_bytes()));
            }
            for id in &d.removed {
                ids.get_or_insert_with(|| read_index(host).into_iter().collect())
                    .remove(id);
                writes.push((key_entry(id), Vec::new()));
            }
            for t in &d.revoked_added {
                writes.push((jti_entry(&t.jti), t.exp.to_be_bytes().to_vec()));
            }
            for j in &d.revoked_removed {
                writes.push((jti_entry(j), Vec::new()));
            }
            // An empty delta at the held version means "nothing changed": only the
            // contact time moves.
            let meta = Meta {
                version: d.version,
                issued_at: d.issued_at,
                last_ok_us: now_us,
                signing: d.signing_keys,
            };
            (ids.map(|ids| encode_index(&ids)), meta)
        }
    };
    Ok(Plan {
        len: writes.len(),
        writes: writes.into_iter(),
        index,
        meta: meta.encode(),
        version: meta.version,
    })
}

impl Plan {
    /// Writes up to `batch` entries; true once everything, `kg:meta` included, is written.
    pub fn step<H: Host + ?Sized>(&mut self, host: &H, batch: usize) -> Result<bool, ApplyError> {
        let w = |r: Result<(), SetError>| r.map_err(|_| ApplyError::Write);
        for (key, value) in self.writes.by_ref().take(batch) {
            w(host.shared_set(&key, &value, None))?;
        }
        if self.writes.len() > 0 {
            return Ok(false);
        }
        if let Some(index) = self.index.take() {
            w(host.shared_set(INDEX, &index, None))?;
        }
        w(host.shared_set(META, &self.meta, None))?;
        Ok(true)
    }
}

/// Applies a verified payload at once (tests and small deltas).
pub fn apply<H: Host + ?Sized>(host: &H, payload: Payload, now_us: u64) -> Result<u64, ApplyError> {
    let mut p = plan(host, payload, now_us)?;
    while !p.step(host, usize::MAX)? {}
    Ok(p.version)
}

/// Records that keyd answered (a 304 after a long-poll): the held snapshot is current.
pub fn touch<H: Host + ?Sized>(host: &H, now_us: u64) -> Result<(), SetError> {
    match Meta::read(host) {
        Some(mut m) => {
            m.last_ok_us = now_us;
            host.shared_set(META, &m.encode(), None)
        }
        None => Ok(()),
    }
}

/// Reads an 8-byte state entry, computes the next state, and writes it back with
/// compare-and-swap, retrying on conflict so no worker's update is lost. `f` returns the
/// state to write (or `None` to leave the entry unchanged) and the result.
pub fn cas_update<H: Host + ?Sized, T>(
    host: &H,
    key: &str,
    mut f: impl FnMut(Option<&[u8]>) -> (Option<Vec<u8>>, T),
) -> T {
    const ATTEMPTS: usize = 16;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let mut cur = host.shared_get(key);
        if cur.cas.is_none() {
            // Envoy ignores CAS on a missing entry, so create it empty first (empty reads
            // as absent) and update it under CAS like any other. Two workers creating the
            // same entry in the same instant can still lose one update: at most one
            // request per key or address, once.
            if host.shared_set(key, &[], None).is_err() {
                return f(None).1;
            }
            cur = host.shared_get(key);
        }
        let (next, out) = f(cur.bytes());
        let Some(next) = next else { return out };
        match host.shared_set(key, &next, cur.cas) {
            Ok(()) => return out,
            Err(SetError::CasMismatch) => last = Some(out),
            Err(SetError::Failed) => return out,
        }
    }
    // Contention beyond reason: answer with the last computed outcome rather than spin.
    match last {
        Some(out) => out,
        None => f(None).1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::*;
    use keygate_core::snapshot::{Delta, RevokedToken};

    fn full(host: &MockHost, s: &keygate_core::snapshot::Snapshot) -> Result<u64, ApplyError> {
        apply(host, Payload::Full(s.clone()), 1)
    }

    #[test]
    fn full_snapshots_replace_the_key_set() {
        let host = MockHost::default();
        let (_, a) = api_key(1);
        let (_, b) = api_key(2);
        full(&host, &snapshot(1, vec![a.clone(), b.clone()])).unwrap();
        let store = SharedStore {
            host: &host,
            signing: &[],
        };
        assert!(store.key(&a.id).is_some() && store.key(&b.id).is_some());
        full(&host, &snapshot(2, vec![b.clone()])).unwrap();
        assert!(
            store.key(&a.id).is_none(),
            "a key the new snapshot lacks is gone"
        );
        assert_eq!(store.key(&b.id).map(|r| r.into_owned()), Some(b.clone()));
        assert_eq!(
            full(&host, &snapshot(2, vec![])),
            Err(ApplyError::Rejected(SnapshotReject::NotNewer))
        );
    }

    #[test]
    fn deltas_upsert_remove_and_revoke_tokens() {
        let host = MockHost::default();
        let (_, a) = api_key(1);
        let (_, b) = api_key(2);
        full(&host, &snapshot(1, vec![a.clone()])).unwrap();
        let d = Delta {
            base: 1,
            version: 2,
            issued_at: 5,
            signing_keys: vec![],
            upserts: vec![b.clone()],
            removed: vec![a.id.clone()],
            revoked_added: vec![RevokedToken {
                jti: "j1".into(),
                exp: 99,
            }],
            revoked_removed: vec![],
        };
        assert_eq!(apply(&host, Payload::Delta(d.clone()), 2), Ok(2));
        let store = SharedStore {
            host: &host,
            signing: &[],
        };
        assert!(store.key(&a.id).is_none());
        assert!(store.key(&b.id).is_some());
        assert!(store.token_revoked("j1"));
        assert_eq!(read_index(&host), vec![b.id.clone()]);
        let again = apply(&host, Payload::Delta(d), 3);
        assert_eq!(
            again,
            Err(ApplyError::Rejected(SnapshotReject::BaseMismatch))
        );
        let writes = host.shared.borrow().writes;
        let d3 = Delta {
            base: 2,
            version: 3,
            revoked_removed: vec!["j1".into()],
            ..Delta::default()
        };
        apply(&host, Payload::Delta(d3), 4).unwrap();
        assert!(!store.token_revoked("j1"));
        assert_eq!(
            host.shared.borrow().writes - writes,
            2,
            "no index rewrite without id changes"
        );
        assert_eq!(
            Meta::read(&host).map(|m| (m.version, m.last_ok_us)),
            Some((3, 4))
        );
    }

    #[test]
    fn cas_update_retries_until_it_wins() {
        let host = MockHost::default();
        let mut first = true;
        let n = cas_update(&host, "c", |cur| {
            if first {
                // Another worker writes between our read and our write.
                first = false;
                host.shared_set("c", &[7], None).unwrap();
            }
            let v = cur.map_or(0, |b| b[0]) + 1;
            (Some(vec![v]), v)
        });
        assert_eq!(n, 8, "recomputed from the other worker's value");
    }
}
