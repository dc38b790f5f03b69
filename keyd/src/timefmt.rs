//! Wall-clock time for keyd: Unix seconds inside, RFC 3339 UTC strings in JSON.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Now, in Unix seconds.
pub fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Now, in Unix microseconds (rate limiter and backoff clocks).
pub fn now_us() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(t.as_micros()).unwrap_or(u64::MAX)
}

/// `2026-11-23T09:00:00Z`. Out-of-range times (never written by keyd) render as the epoch.
pub fn rfc3339(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

pub fn rfc3339_opt(secs: Option<i64>) -> serde_json::Value {
    secs.map_or(serde_json::Value::Null, |s| rfc3339(s).into())
}

/// Parses an RFC 3339 time (any offset) into Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s.trim(), &Rfc3339)
        .ok()
        .map(OffsetDateTime::unix_timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        assert_eq!(rfc3339(1_795_424_400), "2026-11-23T09:00:00Z");
        assert_eq!(parse_rfc3339("2026-11-23T09:00:00Z"), Some(1_795_424_400));
        assert_eq!(
            parse_rfc3339("2026-11-23T10:00:00+01:00"),
            Some(1_795_424_400)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
