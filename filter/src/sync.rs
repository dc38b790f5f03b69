//! The sync loop: keeps shared data current from keyd, once per Envoy.
//!
//! Every worker VM ticks, but only the holder of the `kg:lease` entry (taken and renewed
//! with compare-and-swap) fetches, so an idle Envoy holds exactly one long-poll to keyd
//! whatever its worker count. If the holder stops ticking its lease lapses and another
//! worker takes over, continuing from the version in `kg:meta`.
//!
//! Per worker the loop is a small state machine driven by `on_tick` and
//! `on_http_call_response`:
//!
//! ```text
//! Idle { next_at } --tick, lease held, now >= next_at--> Fetching { token }
//! Fetching --200 applied | 304--> Idle { now }            (ask again at once: long-poll)
//! Fetching --error | rejected--> Idle { now + backoff }   (250 ms doubling, capped)
//! ```
//!
//! A fetch asks for `since = held version` with `wait = poll_wait` (keyd answers when
//! something changes, else 304 after the wait), or for a full snapshot when nothing is held
//! or a delta did not fit.

use crate::config::Config;
use crate::host::{Host, Level};
use crate::shared::{self, ApplyError, Meta, Plan, LEASE, WORKERS};
use crate::stats::{self, Stats};
use keygate_core::codec::{Cursor, Writer};
use keygate_core::snapshot;
use keygate_core::SnapshotReject;

/// How often each worker's root context ticks.
pub const TICK_MS: u64 = 200;
/// How long a lease lasts without renewal (the holder renews every tick).
pub const LEASE_US: u64 = 2_000_000;
/// First retry delay after a failure; doubles up to `sync_backoff_max`.
pub const BACKOFF_BASE_US: u64 = 250_000;
/// Extra time given to keyd beyond the long-poll wait before a fetch counts as failed.
pub const FETCH_GRACE_MS: u64 = 10_000;
/// Shared-data writes per step when applying a snapshot: a step takes a few ms, so the
/// worker applying a large snapshot keeps serving requests between steps.
pub const APPLY_BATCH: usize = 2_000;
/// Tick period while a snapshot is being applied (steps run on ticks).
pub const APPLY_TICK_MS: u64 = 5;

/// Where this worker's fetch loop is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    Idle {
        next_at_us: u64,
    },
    Fetching {
        token: u32,
        deadline_us: u64,
    },
    /// Writing a verified snapshot to shared data, one batch per tick.
    Applying,
}

/// One worker's share of the sync loop.
#[derive(Debug)]
pub struct Sync {
    worker: u32,
    pub state: SyncState,
    failures: u32,
    want_full: bool,
    plan: Option<Plan>,
    /// Set when this worker made a new version current (the worker then notifies the
    /// others and clears it).
    pub applied: bool,
    /// When the snapshot being applied arrived, and a description for the log.
    applying_since_us: u64,
    applying_what: String,
}

/// Takes the next worker number from `kg:workers` (so leases name their holder).
pub fn claim_worker_id<H: Host + ?Sized>(host: &H) -> u32 {
    shared::cas_update(host, WORKERS, |cur| {
        let n = cur
            .and_then(|b| Cursor::new(b).u32())
            .unwrap_or(0)
            .wrapping_add(1);
        (Some(n.to_be_bytes().to_vec()), n)
    })
}

fn decode_lease(bytes: Option<&[u8]>) -> (u32, u64) {
    let Some(b) = bytes else { return (0, 0) };
    let mut c = Cursor::new(b);
    match (c.u32(), c.u64()) {
        (Some(owner), Some(until)) => (owner, until),
        _ => (0, 0),
    }
}

/// Snapshot version and seconds since keyd last answered, as Envoy gauges.
fn record_gauges<H: Host + ?Sized>(host: &H, stats: &mut Stats, now: u64) {
    if let Some(m) = Meta::read(host) {
        stats.gauge(host, stats::SNAPSHOT_VERSION, m.version);
        stats.gauge(
            host,
            stats::SNAPSHOT_AGE,
            now.saturating_sub(m.last_ok_us) / 1_000_000,
        );
    }
}

impl Sync {
    pub fn new(worker: u32) -> Self {
        Self {
            worker,
            state: SyncState::Idle { next_at_us: 0 },
            failures: 0,
            want_full: false,
            plan: None,
            applied: false,
            applying_since_us: 0,
            applying_what: String::new(),
        }
    }

    pub fn worker(&self) -> u32 {
        self.worker
    }

    /// Takes or renews the lease; true when this worker runs the loop.
    pub fn lead<H: Host + ?Sized>(&self, host: &H, now_us: u64) -> bool {
        let mut cur = host.shared_get(LEASE);
        if cur.cas.is_none() {
            // Envoy ignores CAS on a missing entry: create it empty, then compete under CAS.
            if host.shared_set(LEASE, &[], None).is_err() {
                return false;
            }
            cur = host.shared_get(LEASE);
        }
        let (owner, until) = decode_lease(cur.bytes());
        if owner != self.worker && until > now_us {
            return false;
        }
        let mut w = Writer::with_capacity(12);
        w.u32(self.worker);
        w.u64(now_us.saturating_add(LEASE_US));
        host.shared_set(LEASE, &w.buf, cur.cas).is_ok()
    }

    pub fn on_tick<H: Host + ?Sized>(&mut self, host: &H, cfg: &Config, stats: &mut Stats) {
        let now = host.now_us();
        if let SyncState::Fetching { deadline_us, .. } = self.state {
            if now > deadline_us {
                // The proxy always answers a call (a timeout included); this guards against
                // a lost callback leaving the loop stuck.
                self.failed(host, cfg, stats, now, "keyd did not answer in time");
            }
        }
        if !self.lead(host, now) {
            return;
        }
        if self.state == SyncState::Applying {
            self.continue_apply(host, cfg, stats, now);
        }
        if let SyncState::Idle { next_at_us } = self.state {
            if now >= next_at_us {
                self.fetch(host, cfg, stats, now);
            }
        }
        record_gauges(host, stats, now);
    }

    fn fetch<H: Host + ?Sized>(&mut self, host: &H, cfg: &Config, stats: &mut Stats, now: u64) {
        let held = Meta::read(host).map_or(0, |m| m.version);
        let since = if self.want_full { 0 } else { held };
        let wait = if since == 0 { 0 } else { cfg.poll_wait_secs };
        let path = format!("/v1/snapshot?since={since}&wait={wait}");
        let auth = format!("Bearer {}", cfg.filter_credential);
        let headers = [
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", cfg.keyd_authority.as_str()),
            ("authorization", auth.as_str()),
            ("accept", "application/octet-stream"),
        ];
        let timeout_ms = wait * 1000 + FETCH_GRACE_MS;
        match host.http_call(&cfg.keyd_cluster, &headers, timeout_ms) {
            Some(token) => {
                self.state = SyncState::Fetching {
                    token,
                    deadline_us: now + (timeout_ms + 5_000) * 1000,
                }
            }
            None => self.failed(
                host,
                cfg,
                stats,
                now,
                "could not start a call to keyd (is the keyd cluster defined?)",
            ),
        }
    }

    /// Handles keyd's answer to the fetch with `token`.
    pub fn on_response<H: Host + ?Sized>(
        &mut self,
        host: &H,
        cfg: &Config,
        stats: &mut Stats,
        token: u32,
        body_size: usize,
    ) {
        match self.state {
            SyncState::Fetching { token: t, .. } if t == token => {}
            _ => return,
        }
        let now = host.now_us();
        let status = host
            .call_response_header(":status")
            .and_then(|s| String::from_utf8(s).ok())
            .and_then(|s| s.parse::<u16>().ok());
        match status {
            Some(200) => {
                if body_size > cfg.max_snapshot_bytes {
                    return self.rejected(host, cfg, stats, now, SnapshotReject::TooLarge);
                }
                let body = host.call_response_body(body_size).unwrap_or_default();
                let payload =
                    match snapshot::decode(&body, &cfg.pinned, cfg.max_snapshot_bytes) {
                        Ok(p) => p,
                        Err(r) => return self.rejected(host, cfg, stats, now, r),
                    };
                let kind = match &payload {
                    snapshot::Payload::Full(s) => format!("full, {} keys", s.keys.len()),
                    snapshot::Payload::Delta(d) => {
                        format!("delta, {} changed keys", d.upserts.len() + d.removed.len())
                    }
                };
                match shared::plan(host, payload, now) {
                    Ok(plan) => {
                        self.applying_what = format!("{} ({kind})", plan.version);
                        self.applying_since_us = now;
                        self.plan = Some(plan);
                        self.state = SyncState::Applying;
                        self.continue_apply(host, cfg, stats, now);
                        if self.state == SyncState::Applying {
                            host.set_tick_period_ms(APPLY_TICK_MS);
                        }
                    }
                    Err(ApplyError::Rejected(r)) => self.rejected(host, cfg, stats, now, r),
                    Err(ApplyError::Write) => {
                        self.failed(host, cfg, stats, now, "shared data refused a write")
                    }
                }
            }
            Some(304) => match shared::touch(host, now) {
                Ok(()) => self.succeeded(now),
                Err(_) => self.failed(host, cfg, stats, now, "shared data refused a write"),
            },
            Some(401) | Some(403) => self.failed(
                host,
                cfg,
                stats,
                now,
                "keyd refused the filter credential: create one with `keyctl config envoy` and update filter_credential",
            ),
            Some(s) => {
                let msg = format!("keyd answered HTTP {s} to a snapshot fetch");
                self.failed(host, cfg, stats, now, &msg)
            }
            None => self.failed(host, cfg, stats, now, "keyd is unreachable"),
        }
        record_gauges(host, stats, now);
        // After an answer, long-poll again at once rather than at the next tick: a change
        // made meanwhile is then picked up in one round trip.
        if let SyncState::Idle { next_at_us } = self.state {
            if next_at_us <= now && self.lead(host, now) {
                self.fetch(host, cfg, stats, now);
            }
        }
    }

    /// Writes the next batch of the snapshot being applied; on the last one the new
    /// version becomes current and the loop long-polls again.
    fn continue_apply<H: Host + ?Sized>(
        &mut self,
        host: &H,
        cfg: &Config,
        stats: &mut Stats,
        now: u64,
    ) {
        let Some(plan) = self.plan.as_mut() else {
            self.state = SyncState::Idle { next_at_us: now };
            return;
        };
        match plan.step(host, APPLY_BATCH) {
            Ok(false) => {}
            Ok(true) => {
                self.plan = None;
                self.applied = true;
                host.set_tick_period_ms(TICK_MS);
                stats.inc(host, stats::SNAPSHOT_APPLIED);
                let took = host.now_us().saturating_sub(self.applying_since_us) / 1000;
                host.log(
                    Level::Info,
                    &format!("applied snapshot {} in {took} ms", self.applying_what),
                );
                self.succeeded(now);
            }
            Err(_) => {
                self.plan = None;
                host.set_tick_period_ms(TICK_MS);
                self.failed(host, cfg, stats, now, "shared data refused a write");
            }
        }
    }

    fn succeeded(&mut self, now: u64) {
        self.failures = 0;
        self.want_full = false;
        self.state = SyncState::Idle { next_at_us: now };
    }

    fn backoff(&self, cfg: &Config) -> u64 {
        let exp = self.failures.saturating_sub(1).min(20);
        BACKOFF_BASE_US
            .saturating_mul(1u64 << exp)
            .min(cfg.sync_backoff_max_us.max(BACKOFF_BASE_US))
    }

    fn failed<H: Host + ?Sized>(
        &mut self,
        host: &H,
        cfg: &Config,
        stats: &mut Stats,
        now: u64,
        why: &str,
    ) {
        self.failures = self.failures.saturating_add(1);
        stats.inc(host, stats::SYNC_FAILURES);
        let delay = self.backoff(cfg);
        host.log(
            Level::Warn,
            &format!(
                "snapshot sync failed ({why}); retrying in {} ms",
                delay / 1000
            ),
        );
        self.state = SyncState::Idle {
            next_at_us: now.saturating_add(delay),
        };
    }

    fn rejected<H: Host + ?Sized>(
        &mut self,
        host: &H,
        cfg: &Config,
        stats: &mut Stats,
        now: u64,
        why: SnapshotReject,
    ) {
        stats.inc(host, stats::SNAPSHOT_REJECTED);
        host.log(
            Level::Error,
            &format!(
                "discarded a snapshot from keyd: {why} ({}); check that snapshot_public_keys matches keyd's snapshot key",
                why.code()
            ),
        );
        if why == SnapshotReject::BaseMismatch {
            // The delta does not fit what is held: ask for a full snapshot right away.
            self.want_full = true;
            self.state = SyncState::Idle { next_at_us: now };
            return;
        }
        self.failed(host, cfg, stats, now, why.code());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::*;
    use crate::root::Worker;
    use crate::shared::key_entry;
    use keygate_core::snapshot::{KeyStatus, Snapshot, SnapshotSigner};

    fn fresh_worker(host: &MockHost, extra: &str) -> Worker {
        Worker::configure(host, Some(config_json(extra).as_bytes())).unwrap()
    }

    fn last_call(host: &MockHost) -> (String, Vec<(String, String)>) {
        let calls = host.calls.borrow();
        let (c, h, _) = calls.last().expect("a call was made");
        (c.clone(), h.clone())
    }

    fn header<'a>(h: &'a [(String, String)], name: &str) -> &'a str {
        h.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap()
    }

    fn respond(host: &MockHost, w: &mut Worker, status: u16, body: &[u8]) {
        host.answer(status, body);
        let token = host.next_token.get();
        w.on_call_response(host, token, body.len());
    }

    #[test]
    fn one_worker_fetches_and_another_takes_over_when_it_stops() {
        let a = MockHost::default();
        a.set_now(NOW);
        let b = a.sibling();
        let mut wa = fresh_worker(&a, "");
        let mut wb = fresh_worker(&b, "");
        assert_ne!(wa.sync.worker(), wb.sync.worker());
        for _ in 0..5 {
            wa.on_tick(&a);
            wb.on_tick(&b);
            a.advance_ms(TICK_MS);
            b.advance_ms(TICK_MS);
        }
        assert_eq!(
            a.calls.borrow().len(),
            1,
            "the leader fetches once (then waits)"
        );
        assert_eq!(b.calls.borrow().len(), 0, "the other worker never fetches");
        let (cluster, h) = last_call(&a);
        assert_eq!(cluster, "keyd");
        assert_eq!(header(&h, ":path"), "/v1/snapshot?since=0&wait=0");
        assert_eq!(header(&h, "authorization"), "Bearer kgf_test_credential");
        // The leader stops ticking (its worker is gone): the lease lapses, b takes over.
        b.advance_ms(LEASE_US / 1000 + 1);
        wb.on_tick(&b);
        assert_eq!(b.calls.borrow().len(), 1);
    }

    #[test]
    fn snapshot_then_long_poll_then_delta_then_304() {
        let host = MockHost::default();
        host.set_now(NOW);
        let mut w = fresh_worker(&host, "");
        let signer = snapshot_signer();
        let (key, mut rec) = api_key(1);
        let s1 = snapshot(1, vec![rec.clone()]);
        w.on_tick(&host);
        respond(&host, &mut w, 200, &signer.sign_full(&s1));
        assert_eq!(w.view.meta.as_ref().map(|m| m.version), Some(1));
        assert!(w.readiness(&host, host.now_us()).is_ok());
        assert_eq!(host.metric(crate::stats::SNAPSHOT_APPLIED), 1);

        w.on_tick(&host);
        let (_, h) = last_call(&host);
        assert_eq!(header(&h, ":path"), "/v1/snapshot?since=1&wait=30");

        rec.status = KeyStatus::Revoked;
        let s2 = snapshot(2, vec![rec.clone()]);
        respond(&host, &mut w, 200, &signer.sign_delta(&s1.diff(&s2)));
        assert_eq!(w.view.meta.as_ref().map(|m| m.version), Some(2));
        let stored = host.shared_get(&key_entry(&rec.id));
        let stored =
            keygate_core::snapshot::KeyRecord::from_bytes(stored.bytes().unwrap()).unwrap();
        assert_eq!(stored.status, KeyStatus::Revoked);
        let _ = key;

        host.advance_ms(30_000);
        w.on_tick(&host);
        respond(&host, &mut w, 304, b"");
        assert_eq!(
            w.view.meta.as_ref().map(|m| m.last_ok_us),
            Some(host.now_us())
        );
        w.on_tick(&host);
        assert_eq!(host.metric(crate::stats::SNAPSHOT_VERSION), 2);
    }

    #[test]
    fn errors_back_off_keep_the_last_snapshot_and_count() {
        let host = MockHost::default();
        let (_, rec) = api_key(2);
        let mut w = worker_with(&host, r#","max_staleness":"60s""#, &snapshot(1, vec![rec]));
        let mut gaps = Vec::new();
        for _ in 0..5 {
            let before = host.calls.borrow().len();
            let start = host.now_us();
            // Tick until the next fetch goes out.
            while host.calls.borrow().len() == before {
                w.on_tick(&host);
                host.advance_ms(50);
            }
            gaps.push(host.now_us() - start);
            respond(&host, &mut w, 503, b"");
        }
        assert!(
            gaps.windows(2).skip(1).all(|g| g[1] >= g[0]),
            "backoff grows: {gaps:?}"
        );
        assert!(
            *gaps.last().unwrap() <= 5_100_000,
            "capped at sync_backoff_max: {gaps:?}"
        );
        assert_eq!(host.metric(crate::stats::SYNC_FAILURES), 5);
        assert!(
            w.readiness(&host, host.now_us()).is_ok(),
            "last good snapshot still used"
        );
        assert_eq!(
            w.readiness(&host, host.now_us() + 61_000_000),
            Err(keygate_core::verify::DenyReason::StaleSnapshot)
        );
        assert!(host
            .logs
            .borrow()
            .iter()
            .all(|l| !l.contains("kgf_test_credential")));
    }

    #[test]
    fn forged_or_mismatched_snapshots_are_discarded() {
        let host = MockHost::default();
        host.set_now(NOW);
        let mut w = fresh_worker(&host, "");
        let (_, rec) = api_key(3);
        let forged = SnapshotSigner::from_seed([66; 32]).sign_full(&snapshot(1, vec![rec.clone()]));
        w.on_tick(&host);
        respond(&host, &mut w, 200, &forged);
        assert!(w.view.meta.is_none(), "a forged snapshot is never applied");
        assert!(host.shared_get(&key_entry(&rec.id)).bytes().is_none());
        assert_eq!(host.metric(crate::stats::SNAPSHOT_REJECTED), 1);

        // A delta that does not start at the held version: the next fetch asks for a full one.
        let signer = snapshot_signer();
        let s1 = snapshot(1, vec![]);
        host.advance_ms(1000);
        w.on_tick(&host);
        respond(&host, &mut w, 200, &signer.sign_full(&s1));
        let s5 = snapshot(5, vec![rec]);
        let mut d = Snapshot {
            version: 4,
            ..s1.clone()
        }
        .diff(&s5);
        d.base = 4;
        w.on_tick(&host);
        respond(&host, &mut w, 200, &signer.sign_delta(&d));
        assert_eq!(w.view.meta.as_ref().map(|m| m.version), Some(1));
        w.on_tick(&host);
        let (_, h) = last_call(&host);
        assert_eq!(header(&h, ":path"), "/v1/snapshot?since=0&wait=0");
        // An older full snapshot (a rollback) is refused too.
        respond(&host, &mut w, 200, &signer.sign_full(&snapshot(1, vec![])));
        assert_eq!(host.metric(crate::stats::SNAPSHOT_REJECTED), 3);
    }
}

#[cfg(test)]
mod batch_tests {
    use super::*;
    use crate::mock::*;
    use crate::root::Worker;

    #[test]
    fn large_snapshots_are_applied_in_batches_and_become_current_last() {
        let host = MockHost::default();
        host.set_now(NOW);
        let mut w = Worker::configure(&host, Some(config_json("").as_bytes())).unwrap();
        let (_, first) = api_key(1);
        let keys: Vec<_> = (0..(APPLY_BATCH * 2 + 10))
            .map(|i| {
                let mut r = first.clone();
                r.id = format!("k{i:011}");
                r
            })
            .collect();
        w.on_tick(&host);
        host.answer(200, &snapshot_signer().sign_full(&snapshot(1, keys)));
        let token = host.next_token.get();
        w.on_call_response(&host, token, host.call_body.borrow().len());
        assert_eq!(w.sync.state, SyncState::Applying);
        assert!(w.view.meta.is_none(), "not current before the last batch");
        let mut ticks = 0;
        while w.sync.state == SyncState::Applying {
            host.advance_ms(APPLY_TICK_MS);
            w.on_tick(&host);
            ticks += 1;
            assert!(ticks < 10);
        }
        assert_eq!(ticks, 2, "three batches: one on arrival, two on ticks");
        assert_eq!(w.view.meta.as_ref().map(|m| m.version), Some(1));
        assert!(host
            .calls
            .borrow()
            .last()
            .is_some_and(|(_, h, _)| h.iter().any(|(k, v)| k == ":path" && v.contains("since=1"))));
    }
}
