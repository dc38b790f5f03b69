//! Rate specs and the limiter state the filter shares across Envoy workers.
//!
//! The limiter is GCRA (a token bucket expressed as one timestamp, the "theoretical arrival
//! time"), so its whole state is 8 bytes: workers read it from proxy-wasm shared data,
//! compute the next state here, and write it back with compare-and-swap, retrying on
//! conflict. No worker holds a lock and no state is lost between workers.

use core::fmt;

/// Requests per period, e.g. `10/s`, `600/m`, `1000/h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    count: u32,
    period_ms: u32,
}

impl RateSpec {
    pub const MAX_COUNT: u32 = 1_000_000;

    pub fn try_new(count: u32, period_ms: u32) -> Result<Self, &'static str> {
        if count == 0 {
            return Err("rate must allow at least 1 request");
        }
        if count > Self::MAX_COUNT {
            return Err("rate count must be at most 1000000");
        }
        if !matches!(period_ms, 1_000 | 60_000 | 3_600_000) {
            return Err("rate period must be s, m or h");
        }
        Ok(Self { count, period_ms })
    }

    /// Parses `N/s`, `N/m`, `N/h` (also `N/sec`, `N/min`, `N/hour`).
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let (n, unit) = s
            .trim()
            .split_once('/')
            .ok_or("rate must look like 10/s, 600/m or 1000/h")?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| "rate count must be a positive whole number (e.g. 10/s)")?;
        let period_ms = match unit.trim() {
            "s" | "sec" | "second" => 1_000,
            "m" | "min" | "minute" => 60_000,
            "h" | "hour" => 3_600_000,
            _ => return Err("rate unit must be s, m or h (e.g. 10/s)"),
        };
        Self::try_new(count, period_ms)
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn period_ms(&self) -> u32 {
        self.period_ms
    }

    /// Milliseconds between requests at the sustained rate (at least 1 µs in GCRA units).
    fn interval_us(&self) -> u64 {
        (u64::from(self.period_ms) * 1000 / u64::from(self.count)).max(1)
    }
}

impl fmt::Display for RateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period_ms {
            1_000 => "s",
            60_000 => "m",
            _ => "h",
        };
        write!(f, "{}/{}", self.count, unit)
    }
}

/// How many requests may arrive at once on top of the sustained rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Burst(u32);

impl Burst {
    pub fn try_new(n: u32) -> Result<Self, &'static str> {
        if n == 0 {
            return Err("burst must be at least 1");
        }
        if n > 100_000 {
            return Err("burst must be at most 100000");
        }
        Ok(Self(n))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// A key's rate: spec plus burst. The default burst is the per-second rate, at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub spec: RateSpec,
    pub burst: Burst,
}

impl Rate {
    pub fn new(spec: RateSpec, burst: Option<Burst>) -> Self {
        let default = (spec.count * 1000 / spec.period_ms).clamp(1, 100_000);
        Self {
            spec,
            burst: burst.unwrap_or(Burst(default)),
        }
    }
}

/// Outcome of one limiter step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    /// State to write back (unchanged when denied).
    pub next_state: [u8; 8],
    /// Whole seconds until a request would be allowed (for `Retry-After`), ≥ 1 when denied.
    pub retry_after_secs: u64,
}

/// One GCRA step. `state` is the stored 8 bytes (`None` or malformed = fresh bucket);
/// `now_us` is monotonic-enough wall time in microseconds.
pub fn step(state: Option<&[u8]>, rate: &Rate, now_us: u64) -> RateDecision {
    let tat = state
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map_or(0, u64::from_be_bytes);
    let interval = rate.spec.interval_us();
    let tolerance = interval.saturating_mul(u64::from(rate.burst.get()));
    let base = tat.max(now_us);
    let new_tat = base.saturating_add(interval);
    if new_tat.saturating_sub(now_us) <= tolerance {
        RateDecision {
            allowed: true,
            next_state: new_tat.to_be_bytes(),
            retry_after_secs: 0,
        }
    } else {
        let wait_us = new_tat.saturating_sub(tolerance).saturating_sub(now_us);
        RateDecision {
            allowed: false,
            next_state: tat.to_be_bytes(),
            retry_after_secs: wait_us.div_ceil(1_000_000).max(1),
        }
    }
}

/// Per-client-address backoff after repeated authentication failures: after `free`
/// failures, each further failure doubles the lockout (1 s, 2 s, 4 s … capped at `max`).
/// State is 16 bytes (failure count, blocked-until in µs) so it can live in shared data too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureBackoff {
    pub free: u32,
    pub max_secs: u64,
    /// Failures older than this are forgotten.
    pub window_secs: u64,
}

impl Default for FailureBackoff {
    fn default() -> Self {
        Self {
            free: 10,
            max_secs: 300,
            window_secs: 600,
        }
    }
}

impl FailureBackoff {
    fn decode(state: Option<&[u8]>) -> (u32, u64, u64) {
        let Some(s) = state else { return (0, 0, 0) };
        let mut c = crate::codec::Cursor::new(s);
        match (c.u32(), c.u64(), c.u64()) {
            (Some(n), Some(until), Some(last)) => (n, until, last),
            _ => (0, 0, 0),
        }
    }

    fn encode(n: u32, until: u64, last: u64) -> Vec<u8> {
        let mut w = crate::codec::Writer::with_capacity(20);
        w.u32(n);
        w.u64(until);
        w.u64(last);
        w.buf
    }

    /// Seconds the address must still wait, if it is locked out.
    pub fn blocked(&self, state: Option<&[u8]>, now_us: u64) -> Option<u64> {
        let (_, until, _) = Self::decode(state);
        (until > now_us).then(|| (until - now_us).div_ceil(1_000_000).max(1))
    }

    /// The state after one more failure.
    pub fn record_failure(&self, state: Option<&[u8]>, now_us: u64) -> Vec<u8> {
        let (mut n, mut until, last) = Self::decode(state);
        if now_us.saturating_sub(last) > self.window_secs * 1_000_000 {
            n = 0;
            until = 0;
        }
        n = n.saturating_add(1);
        if n > self.free {
            let exp = (n - self.free - 1).min(20);
            let secs = (1u64 << exp).min(self.max_secs);
            until = until.max(now_us.saturating_add(secs * 1_000_000));
        }
        Self::encode(n, until, now_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rates() {
        assert_eq!(RateSpec::parse("10/s").unwrap().to_string(), "10/s");
        assert!(RateSpec::parse("0/s").is_err());
        assert!(RateSpec::parse("10/d").is_err());
        assert!(RateSpec::parse("ten/s").is_err());
    }

    #[test]
    fn gcra_allows_burst_then_denies() {
        let rate = Rate::new(RateSpec::parse("5/s").unwrap(), None);
        let mut state = None;
        let now = 1_000_000_000;
        let mut allowed = 0;
        for _ in 0..20 {
            let d = step(state.as_ref().map(|s: &[u8; 8]| &s[..]), &rate, now);
            if d.allowed {
                allowed += 1;
            } else {
                assert!(d.retry_after_secs >= 1);
            }
            state = Some(d.next_state);
        }
        assert_eq!(allowed, 5);
        let later = step(state.as_ref().map(|s| &s[..]), &rate, now + 1_000_000);
        assert!(later.allowed);
    }

    #[test]
    fn backoff_locks_after_free_failures() {
        let b = FailureBackoff {
            free: 3,
            max_secs: 60,
            window_secs: 600,
        };
        let mut s: Option<Vec<u8>> = None;
        for _ in 0..3 {
            s = Some(b.record_failure(s.as_deref(), 10));
            assert_eq!(b.blocked(s.as_deref(), 10), None);
        }
        s = Some(b.record_failure(s.as_deref(), 10));
        assert_eq!(b.blocked(s.as_deref(), 10), Some(1));
    }
}
