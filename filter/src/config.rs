//! The plugin configuration (JSON in Envoy's `configuration` field), validated once in
//! `on_configure`: a bad configuration is refused there, so Envoy rejects it instead of
//! running a filter that cannot decide.

use keygate_core::duration::Duration;
use keygate_core::ed25519_dalek::VerifyingKey;
use keygate_core::ollama_sig::SigOptions;
use keygate_core::ratelimit::FailureBackoff;
use keygate_core::snapshot::parse_public_key;
use keygate_core::verify::EngineConfig;
use serde::Deserialize;
use thiserror::Error;

/// Why a configuration was refused. Names the field and says what to write instead.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("plugin configuration is missing: set the wasm filter's `configuration` to keygate's JSON (see `keyctl config envoy`)")]
    Missing,
    #[error("plugin configuration is not valid JSON for keygate: {0}")]
    Json(String),
    #[error("invalid `{field}`: {reason}")]
    Invalid {
        field: &'static str,
        reason: &'static str,
    },
}

fn invalid(field: &'static str, reason: &'static str) -> ConfigError {
    ConfigError::Invalid { field, reason }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    snapshot_public_keys: Vec<String>,
    filter_credential: String,
    keyd_cluster: String,
    #[serde(default)]
    keyd_authority: Option<String>,
    #[serde(default)]
    upstream_host: Option<String>,
    #[serde(default)]
    max_staleness: Option<String>,
    #[serde(default)]
    poll_wait: Option<String>,
    #[serde(default)]
    sync_backoff_max: Option<String>,
    #[serde(default)]
    max_body_bytes: Option<usize>,
    #[serde(default)]
    max_snapshot_bytes: Option<usize>,
    #[serde(default)]
    token_cache_size: Option<usize>,
    #[serde(default)]
    failure_backoff: Option<RawBackoff>,
    #[serde(default)]
    signed_window: Option<String>,
    #[serde(default)]
    mount_prefix: Option<String>,
    #[serde(default)]
    token_max_lifetime: Option<String>,
    #[serde(default)]
    token_leeway: Option<String>,
    #[serde(default)]
    token_issuer: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackoff {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    free: Option<u32>,
    #[serde(default)]
    max: Option<String>,
    #[serde(default)]
    window: Option<String>,
}

fn yes() -> bool {
    true
}

/// A validated configuration.
#[derive(Clone)]
pub struct Config {
    /// Snapshot-signing keys a snapshot must verify against (several during a rotation).
    pub pinned: Vec<VerifyingKey>,
    /// Sent to keyd as `Authorization: Bearer`; never logged (`Debug` redacts it).
    pub filter_credential: String,
    pub keyd_cluster: String,
    pub keyd_authority: String,
    /// `Host` sent upstream on allow (Ollama bound to loopback rejects other hosts).
    pub upstream_host: Option<String>,
    /// After this long without reaching keyd, requests get 503.
    pub max_staleness_us: u64,
    /// Long-poll wait asked of keyd, in seconds (keyd caps it at 60).
    pub poll_wait_secs: u64,
    pub sync_backoff_max_us: u64,
    pub max_body_bytes: usize,
    pub max_snapshot_bytes: usize,
    pub token_cache_size: usize,
    /// `None` when per-address failure backoff is disabled.
    pub failure_backoff: Option<FailureBackoff>,
    pub engine: EngineConfig,
}

impl core::fmt::Debug for Config {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Config")
            .field("pinned", &self.pinned.len())
            .field("filter_credential", &"<redacted>")
            .field("keyd_cluster", &self.keyd_cluster)
            .field("upstream_host", &self.upstream_host)
            .field("max_staleness_us", &self.max_staleness_us)
            .field("poll_wait_secs", &self.poll_wait_secs)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

pub const DEFAULT_MAX_STALENESS: &str = "15m";
pub const DEFAULT_POLL_WAIT: &str = "30s";
pub const DEFAULT_SYNC_BACKOFF_MAX: &str = "5s";
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
pub const DEFAULT_MAX_SNAPSHOT_BYTES: usize = 256 * 1024 * 1024;
pub const DEFAULT_TOKEN_CACHE_SIZE: usize = 10_000;

fn secs(field: &'static str, v: Option<&str>, default: &str) -> Result<u64, ConfigError> {
    Duration::parse(v.unwrap_or(default))
        .map(Duration::secs)
        .map_err(|reason| invalid(field, reason))
}

impl Config {
    pub fn parse(bytes: Option<&[u8]>) -> Result<Self, ConfigError> {
        let bytes = bytes
            .filter(|b| !b.is_empty())
            .ok_or(ConfigError::Missing)?;
        let raw: RawConfig =
            serde_json::from_slice(bytes).map_err(|e| ConfigError::Json(e.to_string()))?;
        if raw.snapshot_public_keys.is_empty() {
            return Err(invalid(
                "snapshot_public_keys",
                "at least one snapshot public key must be pinned (keyctl prints it)",
            ));
        }
        let pinned = raw
            .snapshot_public_keys
            .iter()
            .map(|k| parse_public_key(k))
            .collect::<Option<Vec<_>>>()
            .ok_or(invalid(
                "snapshot_public_keys",
                "each key must be 32 bytes of unpadded base64url, as keyd prints it",
            ))?;
        let cred = raw.filter_credential.trim().to_owned();
        if cred.is_empty() || !cred.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "filter_credential",
                "must be the credential from `POST /v1/filter-credentials` (printable, no spaces)",
            ));
        }
        if raw.keyd_cluster.trim().is_empty() {
            return Err(invalid(
                "keyd_cluster",
                "must name the Envoy cluster of keyd",
            ));
        }
        let poll_wait_secs = secs("poll_wait", raw.poll_wait.as_deref(), DEFAULT_POLL_WAIT)?;
        if poll_wait_secs > 60 {
            return Err(invalid("poll_wait", "must be at most 60s (keyd's maximum)"));
        }
        let max_staleness = secs(
            "max_staleness",
            raw.max_staleness.as_deref(),
            DEFAULT_MAX_STALENESS,
        )?;
        if max_staleness <= poll_wait_secs {
            return Err(invalid(
                "max_staleness",
                "must be longer than poll_wait, or every long-poll would make the snapshot stale",
            ));
        }
        let backoff_max = secs(
            "sync_backoff_max",
            raw.sync_backoff_max.as_deref(),
            DEFAULT_SYNC_BACKOFF_MAX,
        )?;
        let failure_backoff = match raw.failure_backoff {
            Some(b) if !b.enabled => None,
            Some(b) => {
                let d = FailureBackoff::default();
                Some(FailureBackoff {
                    free: b.free.unwrap_or(d.free),
                    max_secs: secs("failure_backoff.max", b.max.as_deref(), "300s")?,
                    window_secs: secs("failure_backoff.window", b.window.as_deref(), "600s")?,
                })
            }
            None => Some(FailureBackoff::default()),
        };
        let mount_prefix = raw.mount_prefix.unwrap_or_default();
        if !(mount_prefix.is_empty() || mount_prefix.starts_with('/')) {
            return Err(invalid("mount_prefix", "must be empty or start with '/'"));
        }
        let engine = EngineConfig {
            token_max_lifetime: i64::try_from(secs(
                "token_max_lifetime",
                raw.token_max_lifetime.as_deref(),
                "24h",
            )?)
            .unwrap_or(i64::MAX),
            token_leeway: i64::try_from(secs("token_leeway", raw.token_leeway.as_deref(), "30s")?)
                .unwrap_or(i64::MAX),
            token_issuer: raw.token_issuer,
            sig: SigOptions {
                window_secs: i64::try_from(secs(
                    "signed_window",
                    raw.signed_window.as_deref(),
                    "300s",
                )?)
                .unwrap_or(i64::MAX),
                mount_prefix,
            },
        };
        let upstream_host = raw.upstream_host.filter(|h| !h.trim().is_empty());
        if upstream_host
            .as_deref()
            .is_some_and(|h| !h.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(invalid(
                "upstream_host",
                "must be a host[:port] without spaces",
            ));
        }
        let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if max_body_bytes == 0 {
            return Err(invalid("max_body_bytes", "must be positive"));
        }
        Ok(Self {
            pinned,
            filter_credential: cred,
            keyd_authority: raw
                .keyd_authority
                .filter(|a| !a.trim().is_empty())
                .unwrap_or_else(|| "keyd".to_owned()),
            keyd_cluster: raw.keyd_cluster,
            upstream_host,
            max_staleness_us: max_staleness.saturating_mul(1_000_000),
            poll_wait_secs,
            sync_backoff_max_us: backoff_max.saturating_mul(1_000_000),
            max_body_bytes,
            max_snapshot_bytes: raw.max_snapshot_bytes.unwrap_or(DEFAULT_MAX_SNAPSHOT_BYTES),
            token_cache_size: raw.token_cache_size.unwrap_or(DEFAULT_TOKEN_CACHE_SIZE),
            failure_backoff,
            engine,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_core::snapshot::{encode_public_key, SnapshotSigner};

    pub(crate) fn json(pinned: &str) -> String {
        format!(
            r#"{{"snapshot_public_keys":["{pinned}"],"filter_credential":"kgf_secret","keyd_cluster":"keyd"}}"#
        )
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let k = encode_public_key(&SnapshotSigner::from_seed([1; 32]).verifying_key());
        let c = Config::parse(Some(json(&k).as_bytes())).unwrap();
        assert_eq!(c.pinned.len(), 1);
        assert_eq!(c.poll_wait_secs, 30);
        assert_eq!(c.max_staleness_us, 900 * 1_000_000);
        assert_eq!(c.keyd_authority, "keyd");
        assert!(c.failure_backoff.is_some());
        assert!(!format!("{c:?}").contains("kgf_secret"));
    }

    #[test]
    fn bad_configs_are_refused_with_the_field_named() {
        assert_eq!(Config::parse(None).unwrap_err(), ConfigError::Missing);
        assert!(matches!(
            Config::parse(Some(b"{")).unwrap_err(),
            ConfigError::Json(_)
        ));
        let e = Config::parse(Some(json("nope").as_bytes())).unwrap_err();
        assert!(e.to_string().contains("snapshot_public_keys"), "{e}");
        let k = encode_public_key(&SnapshotSigner::from_seed([1; 32]).verifying_key());
        let with = |extra: &str| {
            let j = json(&k);
            let j = j.trim_end_matches('}').to_owned() + "," + extra + "}";
            Config::parse(Some(j.as_bytes()))
        };
        assert!(with(r#""poll_wait":"2m""#)
            .unwrap_err()
            .to_string()
            .contains("poll_wait"));
        assert!(with(r#""max_staleness":"10s""#)
            .unwrap_err()
            .to_string()
            .contains("max_staleness"));
        assert!(with(r#""unknown_field":1"#).is_err());
        assert!(with(r#""failure_backoff":{"enabled":false}"#)
            .unwrap()
            .failure_backoff
            .is_none());
    }
}
