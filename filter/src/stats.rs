//! Envoy stats the filter defines (Envoy shows them as `wasmcustom.keygate.*`): requests
//! allowed, denied by reason, snapshot version and age, sync failures. Metric ids are
//! per VM; Envoy aggregates same-named counters across workers.
//!
//! `allowed`, counted on every forwarded request, is added up in the VM and flushed to
//! Envoy on each tick ([`Stats::flush`], every 200 ms): a hostcall per request would cost
//! more than the rest of the counting. Denials are counted at once.

use crate::host::{Host, MetricKind};
use std::collections::HashMap;

pub const ALLOWED: &str = "keygate.allowed";
pub const DENIED: &str = "keygate.denied";
pub const SNAPSHOT_VERSION: &str = "keygate.snapshot_version";
pub const SNAPSHOT_AGE: &str = "keygate.snapshot_age_seconds";
pub const SYNC_FAILURES: &str = "keygate.sync_failures";
pub const SNAPSHOT_REJECTED: &str = "keygate.snapshot_rejected";
pub const SNAPSHOT_APPLIED: &str = "keygate.snapshot_applied";

/// Lazily defined metric ids of one VM.
#[derive(Debug, Default)]
pub struct Stats {
    ids: HashMap<String, u32>,
    /// Allowed requests not yet added to the Envoy counter.
    pending_allowed: i64,
}

impl Stats {
    fn id<H: Host + ?Sized>(&mut self, host: &H, kind: MetricKind, name: &str) -> Option<u32> {
        if let Some(id) = self.ids.get(name) {
            return Some(*id);
        }
        let id = host.define_metric(kind, name)?;
        self.ids.insert(name.to_owned(), id);
        Some(id)
    }

    pub fn inc<H: Host + ?Sized>(&mut self, host: &H, name: &str) {
        if let Some(id) = self.id(host, MetricKind::Counter, name) {
            host.increment_metric(id, 1);
        }
    }

    pub fn gauge<H: Host + ?Sized>(&mut self, host: &H, name: &str, value: u64) {
        if let Some(id) = self.id(host, MetricKind::Gauge, name) {
            host.record_metric(id, value);
        }
    }

    /// Defines the counters every deployment shows from the start (Envoy lists a defined
    /// counter at 0, so `keygate.allowed` is there before the first flush).
    pub fn define<H: Host + ?Sized>(&mut self, host: &H) {
        self.id(host, MetricKind::Counter, ALLOWED);
        self.id(host, MetricKind::Counter, DENIED);
    }

    /// Counts a forwarded request (reaches Envoy on the next [`Stats::flush`]).
    pub fn allowed(&mut self) {
        self.pending_allowed = self.pending_allowed.saturating_add(1);
    }

    /// Adds what was counted in the VM since the last flush to Envoy's counters.
    pub fn flush<H: Host + ?Sized>(&mut self, host: &H) {
        let n = std::mem::take(&mut self.pending_allowed);
        if n > 0 {
            if let Some(id) = self.id(host, MetricKind::Counter, ALLOWED) {
                host.increment_metric(id, n);
            }
        }
    }

    /// Counts a denial in total and under its reason code (codes never hold request bytes).
    pub fn denied<H: Host + ?Sized>(&mut self, host: &H, code: &str) {
        self.inc(host, DENIED);
        self.inc(host, &format!("{DENIED}.{code}"));
    }
}
