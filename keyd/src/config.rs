//! Command line and environment: the clap structs only parse; [`Config::from_args`] turns
//! them into validated settings, so an invalid duration or URL stops keyd at start with a
//! message naming the flag.

use crate::error::{Error, Result};
use crate::store::{DbUrl, Dialect};
use clap::{Args, Parser, Subcommand, ValueEnum};
use keygate_core::duration::Duration;
use keygate_core::ollama_sig::SigOptions;
use keygate_core::ratelimit::FailureBackoff;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "keyd", about = "keygate's key service", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the key service.
    Serve(ServeArgs),
    /// Check the audit log's hash chain and report the first broken link.
    AuditVerify(AuditVerifyArgs),
    /// Print keyd's version.
    Version,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the chosen address is printed as
    /// `listening: ADDR`).
    #[arg(long, env = "KEYD_LISTEN", default_value = "127.0.0.1:7433")]
    pub listen: String,
    /// sqlite:///path/keyd.db or postgres://user@host/db. Default: an SQLite file in
    /// $XDG_DATA_HOME/keygate (else ~/.local/share/keygate).
    #[arg(long, env = "KEYD_DATABASE_URL")]
    pub database: Option<String>,
    #[arg(long, env = "KEYD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Longest lifetime of a minted or exchanged token.
    #[arg(long, default_value = "24h")]
    pub token_max_ttl: String,
    /// Longest a snapshot long-poll is held (`wait` is capped to this).
    #[arg(long, default_value = "60s")]
    pub snapshot_wait_max: String,
    /// How long a rotated-out signing key stays published.
    #[arg(long, default_value = "24h")]
    pub signing_key_retention: String,
    /// Where the generated admin token file goes. Default: beside the SQLite file; for
    /// PostgreSQL, $XDG_DATA_HOME/keygate.
    #[arg(long, env = "KEYD_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Accepted clock difference for Ollama signed requests on /v1/verify.
    #[arg(long, default_value = "300s")]
    pub ollama_sig_window: String,
    /// Path prefix the gateway is mounted under, removed before Ollama signatures are
    /// checked (e.g. /ollama).
    #[arg(long, default_value = "")]
    pub ollama_sig_prefix: String,
    /// How often keyd re-reads the database for changes made by other keyd instances
    /// (PostgreSQL also wakes it at once with NOTIFY).
    #[arg(long, default_value = "1s")]
    pub recheck_interval: String,
    /// Failed authentications an address may make before backoff starts.
    #[arg(long, default_value_t = 10)]
    pub auth_failures_free: u32,
}

#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    #[arg(long, env = "KEYD_DATABASE_URL")]
    pub database: Option<String>,
}

/// Validated settings for `keyd serve`.
#[derive(Clone)]
pub struct Config {
    pub listen: String,
    pub db: DbUrl,
    pub log_format: LogFormat,
    pub token_max_ttl: i64,
    pub snapshot_wait_max: u64,
    pub signing_key_retention: i64,
    pub state_dir: PathBuf,
    /// From `KEYD_ADMIN_TOKEN`; never printed.
    pub admin_token: Option<String>,
    pub sig: SigOptions,
    pub recheck_interval: std::time::Duration,
    pub backoff: FailureBackoff,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("db", &self.db)
            .field("token_max_ttl", &self.token_max_ttl)
            .field("snapshot_wait_max", &self.snapshot_wait_max)
            .field("state_dir", &self.state_dir)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

fn duration(flag: &str, value: &str) -> Result<Duration> {
    Duration::parse(value).map_err(|why| Error::Config(format!("--{flag} {value:?}: {why}")))
}

/// `$XDG_DATA_HOME/keygate`, else `~/.local/share/keygate`.
pub fn data_dir() -> Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("keygate"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            Error::Config("neither XDG_DATA_HOME nor HOME is set: pass --database".into())
        })?;
    Ok(PathBuf::from(home).join(".local/share/keygate"))
}

/// The database URL from the flag, or the default SQLite file.
pub fn database_url(flag: Option<&str>) -> Result<DbUrl> {
    match flag.map(str::trim).filter(|s| !s.is_empty()) {
        Some(u) => DbUrl::parse(u),
        None => DbUrl::parse(&format!(
            "sqlite://{}",
            data_dir()?.join("keyd.db").display()
        )),
    }
}

impl Config {
    pub fn from_args(a: &ServeArgs, admin_token: Option<String>) -> Result<Self> {
        let db = database_url(a.database.as_deref())?;
        let state_dir = match (&a.state_dir, &db.sqlite_path) {
            (Some(d), _) => d.clone(),
            (None, Some(p)) => p
                .parent()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(".")),
            (None, None) => data_dir()?,
        };
        let admin_token = admin_token.filter(|t| !t.is_empty());
        if let Some(t) = &admin_token {
            if t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Error::Config(
                    "KEYD_ADMIN_TOKEN must be at least 16 characters with no spaces".into(),
                ));
            }
        }
        let mut mount_prefix = a.ollama_sig_prefix.trim().to_owned();
        if !mount_prefix.is_empty() && !mount_prefix.starts_with('/') {
            mount_prefix.insert(0, '/');
        }
        Ok(Self {
            listen: a.listen.clone(),
            db,
            log_format: a.log_format,
            token_max_ttl: duration("token-max-ttl", &a.token_max_ttl)?.secs_i64(),
            snapshot_wait_max: duration("snapshot-wait-max", &a.snapshot_wait_max)?.secs(),
            signing_key_retention: duration("signing-key-retention", &a.signing_key_retention)?
                .secs_i64(),
            state_dir,
            admin_token,
            sig: SigOptions {
                window_secs: duration("ollama-sig-window", &a.ollama_sig_window)?.secs_i64(),
                mount_prefix,
            },
            recheck_interval: std::time::Duration::from_secs(
                duration("recheck-interval", &a.recheck_interval)?.secs(),
            ),
            backoff: FailureBackoff {
                free: a.auth_failures_free,
                ..FailureBackoff::default()
            },
        })
    }

    pub fn is_postgres(&self) -> bool {
        self.db.dialect == Dialect::Postgres
    }
}
