//! Counters behind `/metrics`, rendered as Prometheus text. Plain atomics and small maps:
//! label sets are bounded (route templates, status codes, deny reason codes).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    verify: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    pub longpoll_waiters: AtomicI64,
    pub audit_entries: AtomicI64,
    pub snapshot_full_builds: AtomicU64,
    pub snapshot_full_build_us: AtomicU64,
    pub snapshot_full_bytes: AtomicU64,
    pub refresh_errors: AtomicU64,
}

/// A held gauge increment, undone on drop (so a cancelled long-poll is uncounted too).
#[derive(Debug)]
pub struct GaugeGuard<'a>(&'a AtomicI64);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn request(&self, route: &str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route.to_owned(), status)).or_default() += 1;
        }
    }

    /// `result` is `allow` or `deny`; `reason` is a keygate-core reason code.
    pub fn verify_decision(&self, result: &'static str, reason: &'static str) {
        if let Ok(mut m) = self.verify.lock() {
            *m.entry((result, reason)).or_default() += 1;
        }
    }

    pub fn waiter(&self) -> GaugeGuard<'_> {
        self.longpoll_waiters.fetch_add(1, Ordering::Relaxed);
        GaugeGuard(&self.longpoll_waiters)
    }

    /// Renders everything; `keys` and `version` come from the live state at scrape time.
    pub fn render(&self, keys: crate::live::KeyCounts, version: u64) -> String {
        let mut out = String::with_capacity(2048);
        let _ = writeln!(
            out,
            "# HELP keyd_http_requests_total HTTP requests by route and status.\n\
             # TYPE keyd_http_requests_total counter"
        );
        if let Ok(m) = self.requests.lock() {
            for ((route, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "keyd_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                    escape(route)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP keyd_keys Keys by status.\n# TYPE keyd_keys gauge\n\
             keyd_keys{{status=\"active\"}} {}\nkeyd_keys{{status=\"revoked\"}} {}\n\
             keyd_keys{{status=\"expired\"}} {}",
            keys.active, keys.revoked, keys.expired
        );
        let _ = writeln!(
            out,
            "# HELP keyd_snapshot_version Current snapshot version.\n\
             # TYPE keyd_snapshot_version gauge\nkeyd_snapshot_version {version}"
        );
        let _ = writeln!(
            out,
            "# HELP keyd_longpoll_waiters Snapshot requests being held.\n\
             # TYPE keyd_longpoll_waiters gauge\nkeyd_longpoll_waiters {}",
            self.longpoll_waiters.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP keyd_audit_entries Entries in the audit log.\n\
             # TYPE keyd_audit_entries gauge\nkeyd_audit_entries {}",
            self.audit_entries.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP keyd_verify_decisions_total /v1/verify decisions by result and reason.\n\
             # TYPE keyd_verify_decisions_total counter"
        );
        if let Ok(m) = self.verify.lock() {
            for ((result, reason), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "keyd_verify_decisions_total{{result=\"{result}\",reason=\"{reason}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP keyd_snapshot_full_builds_total Full snapshots encoded and signed.\n\
             # TYPE keyd_snapshot_full_builds_total counter\nkeyd_snapshot_full_builds_total {}\n\
             # HELP keyd_snapshot_full_build_seconds Time the last full snapshot took to build.\n\
             # TYPE keyd_snapshot_full_build_seconds gauge\nkeyd_snapshot_full_build_seconds {:.6}\n\
             # HELP keyd_snapshot_full_bytes Size of the last full snapshot.\n\
             # TYPE keyd_snapshot_full_bytes gauge\nkeyd_snapshot_full_bytes {}\n\
             # HELP keyd_refresh_errors_total Failed reloads of changes from the database.\n\
             # TYPE keyd_refresh_errors_total counter\nkeyd_refresh_errors_total {}",
            self.snapshot_full_builds.load(Ordering::Relaxed),
            self.snapshot_full_build_us.load(Ordering::Relaxed) as f64 / 1e6,
            self.snapshot_full_bytes.load(Ordering::Relaxed),
            self.refresh_errors.load(Ordering::Relaxed),
        );
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
