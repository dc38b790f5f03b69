//! Envoy stats the filter defines (Envoy shows them as `wasmcustom.keygate.*`): requests
//! allowed, denied by reason, snapshot version and age, sync failures. Metric ids are
//! per VM; Envoy aggregates same-named counters across workers.

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

    pub fn allowed<H: Host + ?Sized>(&mut self, host: &H) {
        self.inc(host, ALLOWED);
    }

    /// Counts a denial in total and under its reason code (codes never hold request bytes).
    pub fn denied<H: Host + ?Sized>(&mut self, host: &H, code: &str) {
        self.inc(host, DENIED);
        self.inc(host, &format!("{DENIED}.{code}"));
    }
}
