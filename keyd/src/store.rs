//! Storage: every SQL statement keyd runs lives in this file.
//!
//! One code path for SQLite and PostgreSQL through sqlx's `Any` driver: the schema uses only
//! `BIGINT` and `TEXT` and the statements only syntax both dialects share (`$N` parameters,
//! `RETURNING`, `ON CONFLICT`), so behaviour is the same on both. Where a dialect needs its
//! own statement (PostgreSQL's `NOTIFY`, SQLite's pragmas) it is chosen by [`Dialect`].
//!
//! Writes go through [`WriteTx`]: it starts by updating the single `chain` row (bumping the
//! snapshot version when the change is visible to filters), which serialises writers — on
//! PostgreSQL across keyd instances too — so versions and audit sequence numbers are
//! assigned in commit order, and the audit entry is written in the same transaction as the
//! change it records.

use crate::audit::{self, Entry, NewEntry};
use crate::error::{Error, Result};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::AnyPool;
use sqlx::{Any, Executor as _, Row as _, Transaction};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One migration set for both dialects: the schema uses only SQL both run identically.
static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// The PostgreSQL channel on which writers announce a new version.
pub const NOTIFY_CHANNEL: &str = "keygate_changes";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A database URL checked for its scheme; for SQLite, also the file it names.
#[derive(Clone)]
pub struct DbUrl {
    pub dialect: Dialect,
    url: String,
    pub sqlite_path: Option<PathBuf>,
}

impl std::fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A PostgreSQL URL may carry a password: print only what identifies the database.
        write!(f, "DbUrl({})", self.display())
    }
}

impl DbUrl {
    pub fn parse(url: &str) -> Result<Self> {
        let url = url.trim();
        if let Some(rest) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
            if path.is_empty() {
                return Err(Error::Config(
                    "the SQLite URL names no file: use sqlite:///path/to/keyd.db".into(),
                ));
            }
            let memory = path == ":memory:";
            let mut query = query.to_owned();
            if !memory && !query.contains("mode=") {
                if !query.is_empty() {
                    query.push('&');
                }
                query.push_str("mode=rwc");
            }
            let full = if query.is_empty() {
                format!("sqlite://{path}")
            } else {
                format!("sqlite://{path}?{query}")
            };
            return Ok(Self {
                dialect: Dialect::Sqlite,
                url: full,
                sqlite_path: (!memory).then(|| PathBuf::from(path)),
            });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self {
                dialect: Dialect::Postgres,
                url: url.to_owned(),
                sqlite_path: None,
            });
        }
        Err(Error::Config(
            "the database URL must start with sqlite:// or postgres://".into(),
        ))
    }

    /// The URL with any password removed, for logs.
    pub fn display(&self) -> String {
        match self.dialect {
            Dialect::Sqlite => self.url.clone(),
            Dialect::Postgres => {
                let (scheme, rest) = self.url.split_once("://").unwrap_or(("postgres", ""));
                match rest.rsplit_once('@') {
                    Some((userinfo, host)) => {
                        let user = userinfo.split(':').next().unwrap_or("");
                        format!("{scheme}://{user}@{host}")
                    }
                    None => self.url.clone(),
                }
            }
        }
    }

    pub fn as_str(&self) -> &str {
        &self.url
    }
}

/// One key as stored (an API key or a registered Ollama public key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub id: String,
    pub kind: String,
    pub name: String,
    /// Hex SHA-256 of the key text, or the hex Ed25519 public key.
    pub digest: String,
    pub prev_digest: Option<String>,
    pub prev_valid_until: Option<i64>,
    pub status: String,
    pub routes: i64,
    /// JSON array of allowlist patterns.
    pub models: String,
    pub rate: Option<String>,
    pub burst: Option<i64>,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub rotated_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub revoke_reason: Option<String>,
    pub version: i64,
}

const KEY_COLS: &str = "id, kind, name, digest, prev_digest, prev_valid_until, status, routes, \
     models, rate, burst, expires_at, created_at, rotated_at, revoked_at, revoke_reason, version";

impl KeyRow {
    fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: r.try_get("id")?,
            kind: r.try_get("kind")?,
            name: r.try_get("name")?,
            digest: r.try_get("digest")?,
            prev_digest: r.try_get("prev_digest")?,
            prev_valid_until: r.try_get("prev_valid_until")?,
            status: r.try_get("status")?,
            routes: r.try_get("routes")?,
            models: r.try_get("models")?,
            rate: r.try_get("rate")?,
            burst: r.try_get("burst")?,
            expires_at: r.try_get("expires_at")?,
            created_at: r.try_get("created_at")?,
            rotated_at: r.try_get("rotated_at")?,
            revoked_at: r.try_get("revoked_at")?,
            revoke_reason: r.try_get("revoke_reason")?,
            version: r.try_get("version")?,
        })
    }
}

/// A signing key pair (the seed is the private half).
#[derive(Clone)]
pub struct SigningKeyRow {
    pub kid: String,
    /// `token` or `snapshot`.
    pub which: String,
    pub seed: String,
    pub public_key: String,
    pub created_at: i64,
    pub retired_at: Option<i64>,
    pub version: i64,
}

impl std::fmt::Debug for SigningKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SigningKeyRow({} {}, seed: <redacted>)",
            self.which, self.kid
        )
    }
}

impl SigningKeyRow {
    fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            kid: r.try_get("kid")?,
            which: r.try_get("which")?,
            seed: r.try_get("seed")?,
            public_key: r.try_get("public_key")?,
            created_at: r.try_get("created_at")?,
            retired_at: r.try_get("retired_at")?,
            version: r.try_get("version")?,
        })
    }
}

const AUDIT_COLS: &str = "seq, at, action, key_id, actor, detail, prev_hash, hash";

fn audit_from_row(r: &AnyRow) -> Result<Entry> {
    Ok(Entry {
        seq: r.try_get("seq")?,
        at: r.try_get("at")?,
        action: r.try_get("action")?,
        key_id: r.try_get("key_id")?,
        actor: r.try_get("actor")?,
        detail: r.try_get("detail")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

/// What `/v1/audit` asks for.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub key_id: Option<String>,
    pub action: Option<String>,
    pub after: i64,
    pub limit: i64,
}

/// The chain row: global version and the audit chain's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub version: i64,
    pub audit_seq: i64,
    pub audit_hash: String,
}

enum Bind {
    I(i64),
    S(String),
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({:?})", self.dialect)
    }
}

/// Creates `dir` (and parents) readable only by the owner when keyd makes it.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.as_os_str().is_empty() || dir.exists() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
        .map_err(|e| Error::io(format!("cannot create directory {}", dir.display()), e))
}

impl Store {
    /// Opens the database, creating an SQLite file (and its directory) if needed, and runs
    /// the migrations.
    pub async fn open(url: &DbUrl) -> Result<Self> {
        sqlx::any::install_default_drivers();
        if let Some(path) = &url.sqlite_path {
            if let Some(parent) = path.parent() {
                create_private_dir(parent)?;
            }
        }
        let dialect = url.dialect;
        let opts = AnyPoolOptions::new()
            .max_connections(match dialect {
                Dialect::Sqlite => 8,
                Dialect::Postgres => 10,
            })
            .acquire_timeout(Duration::from_secs(15));
        let opts = if dialect == Dialect::Sqlite {
            opts.after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL lets readers run beside the writer; FULL syncs the WAL at every
                    // commit, so an acknowledged write survives a crash or power loss.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    conn.execute("PRAGMA busy_timeout = 15000").await?;
                    Ok(())
                })
            })
        } else {
            opts
        };
        let pool = opts.connect(url.as_str()).await?;
        if let Some(path) = &url.sqlite_path {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                // The file holds signing seeds: owner only.
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
                    |e| {
                        Error::io(
                            format!("cannot restrict permissions of {}", path.display()),
                            e,
                        )
                    },
                )?;
            }
        }
        MIGRATIONS.run(&pool).await?;
        #[cfg(unix)]
        if let Some(path) = &url.sqlite_path {
            use std::os::unix::fs::PermissionsExt as _;
            // The WAL holds recent writes, seeds included: owner only as well.
            for suffix in ["-wal", "-shm"] {
                let mut p = path.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
            }
        }
        Ok(Self { pool, dialect })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn head(&self) -> Result<Head> {
        let r = sqlx::query("SELECT version, audit_seq, audit_hash FROM chain WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(Head {
            version: r.try_get("version")?,
            audit_seq: r.try_get("audit_seq")?,
            audit_hash: r.try_get("audit_hash")?,
        })
    }

    pub async fn setting(&self, name: &str) -> Result<Option<String>> {
        let r = sqlx::query("SELECT value FROM settings WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match r {
            Some(r) => Some(r.try_get("value")?),
            None => None,
        })
    }

    pub async fn get_key(&self, id: &str) -> Result<Option<KeyRow>> {
        let sql = format!("SELECT {KEY_COLS} FROM keys WHERE id = $1");
        let r = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(KeyRow::from_row).transpose()
    }

    /// Keys ordered by id after `after`. With `active_at`, only keys active at that time.
    pub async fn list_keys(
        &self,
        after: Option<&str>,
        limit: i64,
        active_at: Option<i64>,
        kind: Option<&str>,
    ) -> Result<Vec<KeyRow>> {
        let mut sql = format!("SELECT {KEY_COLS} FROM keys WHERE id > $1");
        let mut binds = vec![Bind::S(after.unwrap_or("").to_owned())];
        if let Some(now) = active_at {
            binds.push(Bind::I(now));
            sql.push_str(&format!(
                " AND status = 'active' AND (expires_at IS NULL OR expires_at > ${})",
                binds.len()
            ));
        }
        if let Some(kind) = kind {
            binds.push(Bind::S(kind.to_owned()));
            sql.push_str(&format!(" AND kind = ${}", binds.len()));
        }
        binds.push(Bind::I(limit));
        sql.push_str(&format!(" ORDER BY id LIMIT ${}", binds.len()));
        self.fetch_all(&sql, binds, KeyRow::from_row).await
    }

    /// Keys whose last change has a version in `(since, upto]`.
    pub async fn keys_changed(&self, since: i64, upto: i64) -> Result<Vec<KeyRow>> {
        let sql = format!("SELECT {KEY_COLS} FROM keys WHERE version > $1 AND version <= $2");
        self.fetch_all(&sql, vec![Bind::I(since), Bind::I(upto)], KeyRow::from_row)
            .await
    }

    pub async fn signing_keys(&self) -> Result<Vec<SigningKeyRow>> {
        self.fetch_all(
            "SELECT kid, which, seed, public_key, created_at, retired_at, version \
             FROM signing_keys ORDER BY created_at, kid",
            vec![],
            SigningKeyRow::from_row,
        )
        .await
    }

    pub async fn filter_credential_digest(&self, id: &str) -> Result<Option<String>> {
        let r = sqlx::query("SELECT digest FROM filter_credentials WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match r {
            Some(r) => Some(r.try_get("digest")?),
            None => None,
        })
    }

    pub async fn audit_page(&self, f: &AuditFilter) -> Result<Vec<Entry>> {
        let mut sql = format!("SELECT {AUDIT_COLS} FROM audit WHERE seq > $1");
        let mut binds = vec![Bind::I(f.after)];
        if let Some(since) = f.since {
            binds.push(Bind::I(since));
            sql.push_str(&format!(" AND at >= ${}", binds.len()));
        }
        if let Some(until) = f.until {
            binds.push(Bind::I(until));
            sql.push_str(&format!(" AND at < ${}", binds.len()));
        }
        if let Some(k) = &f.key_id {
            binds.push(Bind::S(k.clone()));
            sql.push_str(&format!(" AND key_id = ${}", binds.len()));
        }
        if let Some(a) = &f.action {
            binds.push(Bind::S(a.clone()));
            sql.push_str(&format!(" AND action = ${}", binds.len()));
        }
        binds.push(Bind::I(f.limit));
        sql.push_str(&format!(" ORDER BY seq LIMIT ${}", binds.len()));
        self.fetch_all(&sql, binds, audit_from_row).await
    }

    /// Walks the whole audit log in `seq` order, page by page, checking the chain.
    pub async fn verify_audit(&self) -> Result<audit::Verifier> {
        let mut v = audit::Verifier::default();
        let mut after = i64::MIN;
        loop {
            let sql =
                format!("SELECT {AUDIT_COLS} FROM audit WHERE seq > $1 ORDER BY seq LIMIT 5000");
            let page = self
                .fetch_all(&sql, vec![Bind::I(after)], audit_from_row)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for e in &page {
                v.push(e);
            }
        }
        let head = self.head().await?;
        v.finish(head.audit_seq, &head.audit_hash);
        Ok(v)
    }

    async fn fetch_all<T>(
        &self,
        sql: &str,
        binds: Vec<Bind>,
        map: fn(&AnyRow) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut q = sqlx::query(sql);
        for b in binds {
            q = match b {
                Bind::I(i) => q.bind(i),
                Bind::S(s) => q.bind(s),
            };
        }
        q.fetch_all(&self.pool).await?.iter().map(map).collect()
    }

    /// Starts a write. With `bump`, the change is visible to filters and gets a new
    /// snapshot version. Blocks while another writer (in any process) holds the chain row.
    pub async fn begin_write(&self, bump: bool) -> Result<WriteTx> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE chain SET version = version + $1 WHERE id = 1 \
             RETURNING version, audit_seq, audit_hash",
        )
        .bind(i64::from(bump))
        .fetch_one(&mut *tx)
        .await?;
        Ok(WriteTx {
            tx,
            dialect: self.dialect,
            version: r.try_get("version")?,
            bumped: bump,
            audit_seq: r.try_get("audit_seq")?,
            audit_hash: r.try_get("audit_hash")?,
            now: crate::timefmt::now(),
            appended: Vec::new(),
        })
    }
}

/// An open write transaction holding the chain row. Dropping it without [`WriteTx::commit`]
/// rolls everything back: nothing is half-written.
pub struct WriteTx {
    tx: Transaction<'static, Any>,
    dialect: Dialect,
    version: i64,
    bumped: bool,
    audit_seq: i64,
    audit_hash: String,
    now: i64,
    appended: Vec<Entry>,
}

impl std::fmt::Debug for WriteTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WriteTx(version {})", self.version)
    }
}

impl WriteTx {
    /// The version this write produces (unchanged when not bumped).
    pub fn version(&self) -> i64 {
        self.version
    }

    /// The time this transaction records for its changes.
    pub fn now(&self) -> i64 {
        self.now
    }

    /// Appends an audit entry chained to the previous one.
    pub async fn audit(&mut self, e: NewEntry) -> Result<Entry> {
        let seq = self.audit_seq + 1;
        let detail = serde_json::to_string(&e.detail)
            .map_err(|err| Error::Corrupt(format!("audit detail: {err}")))?;
        let hash = audit::entry_hash(
            seq,
            self.now,
            e.action,
            e.key_id.as_deref(),
            e.actor,
            &detail,
            &self.audit_hash,
        );
        let entry = Entry {
            seq,
            at: self.now,
            action: e.action.to_owned(),
            key_id: e.key_id,
            actor: e.actor.to_owned(),
            detail,
            prev_hash: self.audit_hash.clone(),
            hash,
        };
        sqlx::query(&format!(
            "INSERT INTO audit ({AUDIT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(entry.seq)
        .bind(entry.at)
        .bind(entry.action.clone())
        .bind(entry.key_id.clone())
        .bind(entry.actor.clone())
        .bind(entry.detail.clone())
        .bind(entry.prev_hash.clone())
        .bind(entry.hash.clone())
        .execute(&mut *self.tx)
        .await?;
        self.audit_seq = seq;
        self.audit_hash.clone_from(&entry.hash);
        self.appended.push(entry.clone());
        Ok(entry)
    }

    pub async fn get_key(&mut self, id: &str) -> Result<Option<KeyRow>> {
        let sql = format!("SELECT {KEY_COLS} FROM keys WHERE id = $1");
        let r = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        r.as_ref().map(KeyRow::from_row).transpose()
    }

    pub async fn insert_key(&mut self, k: &KeyRow) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO keys ({KEY_COLS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
        ))
        .bind(k.id.clone())
        .bind(k.kind.clone())
        .bind(k.name.clone())
        .bind(k.digest.clone())
        .bind(k.prev_digest.clone())
        .bind(k.prev_valid_until)
        .bind(k.status.clone())
        .bind(k.routes)
        .bind(k.models.clone())
        .bind(k.rate.clone())
        .bind(k.burst)
        .bind(k.expires_at)
        .bind(k.created_at)
        .bind(k.rotated_at)
        .bind(k.revoked_at)
        .bind(k.revoke_reason.clone())
        .bind(self.version)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Replaces the key's secret digest, keeping the old one valid until `prev_valid_until`.
    pub async fn rotate_key(
        &mut self,
        id: &str,
        digest: &str,
        prev_digest: &str,
        prev_valid_until: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE keys SET digest = $1, prev_digest = $2, prev_valid_until = $3, \
             rotated_at = $4, version = $5 WHERE id = $6",
        )
        .bind(digest.to_owned())
        .bind(prev_digest.to_owned())
        .bind(prev_valid_until)
        .bind(self.now)
        .bind(self.version)
        .bind(id.to_owned())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Marks an active key revoked; false when it was not active.
    pub async fn revoke_key(&mut self, id: &str, reason: Option<&str>) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE keys SET status = 'revoked', revoked_at = $1, revoke_reason = $2, \
             version = $3 WHERE id = $4 AND status = 'active'",
        )
        .bind(self.now)
        .bind(reason.map(str::to_owned))
        .bind(self.version)
        .bind(id.to_owned())
        .execute(&mut *self.tx)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn current_signing_key(&mut self, which: &str) -> Result<Option<SigningKeyRow>> {
        let r = sqlx::query(
            "SELECT kid, which, seed, public_key, created_at, retired_at, version \
             FROM signing_keys WHERE which = $1 AND retired_at IS NULL",
        )
        .bind(which.to_owned())
        .fetch_optional(&mut *self.tx)
        .await?;
        r.as_ref().map(SigningKeyRow::from_row).transpose()
    }

    /// Retires the current key of `which` (if any) and stores `new` as current.
    pub async fn replace_signing_key(&mut self, new: &SigningKeyRow) -> Result<()> {
        sqlx::query(
            "UPDATE signing_keys SET retired_at = $1, version = $2 \
             WHERE which = $3 AND retired_at IS NULL",
        )
        .bind(self.now)
        .bind(self.version)
        .bind(new.which.clone())
        .execute(&mut *self.tx)
        .await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, which, seed, public_key, created_at, retired_at, version) \
             VALUES ($1, $2, $3, $4, $5, NULL, $6)",
        )
        .bind(new.kid.clone())
        .bind(new.which.clone())
        .bind(new.seed.clone())
        .bind(new.public_key.clone())
        .bind(self.now)
        .bind(self.version)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn insert_filter_credential(
        &mut self,
        id: &str,
        name: Option<&str>,
        digest: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO filter_credentials (id, name, digest, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id.to_owned())
        .bind(name.map(str::to_owned))
        .bind(digest.to_owned())
        .bind(self.now)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn setting(&mut self, name: &str) -> Result<Option<String>> {
        let r = sqlx::query("SELECT value FROM settings WHERE name = $1")
            .bind(name.to_owned())
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(match r {
            Some(r) => Some(r.try_get("value")?),
            None => None,
        })
    }

    pub async fn set_setting(&mut self, name: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name.to_owned())
        .bind(value.to_owned())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Records the new chain head, announces the version (PostgreSQL), and commits.
    /// Returns the audit entries written.
    pub async fn commit(mut self) -> Result<Vec<Entry>> {
        sqlx::query("UPDATE chain SET audit_seq = $1, audit_hash = $2 WHERE id = 1")
            .bind(self.audit_seq)
            .bind(self.audit_hash.clone())
            .execute(&mut *self.tx)
            .await?;
        if self.bumped && self.dialect == Dialect::Postgres {
            // Delivered to listeners only when the transaction commits.
            self.tx
                .execute(format!("NOTIFY {NOTIFY_CHANNEL}").as_str())
                .await?;
        }
        self.tx.commit().await?;
        Ok(self.appended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_get_create_mode_and_a_path() {
        let u = DbUrl::parse("sqlite:///tmp/x/keyd.db").unwrap();
        assert_eq!(u.as_str(), "sqlite:///tmp/x/keyd.db?mode=rwc");
        assert_eq!(u.sqlite_path.unwrap(), PathBuf::from("/tmp/x/keyd.db"));
        let u = DbUrl::parse("sqlite:keyd.db").unwrap();
        assert_eq!(u.sqlite_path.unwrap(), PathBuf::from("keyd.db"));
        assert!(DbUrl::parse("mysql://x").is_err());
        assert!(DbUrl::parse("sqlite://").is_err());
    }

    #[test]
    fn postgres_password_is_not_displayed() {
        let u = DbUrl::parse("postgres://me:hunter2@db:5432/keyd").unwrap();
        assert_eq!(u.display(), "postgres://me@db:5432/keyd");
        assert!(!format!("{u:?}").contains("hunter2"));
    }
}
