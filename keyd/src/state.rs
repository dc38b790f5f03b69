//! Everything a request handler shares: the store, the live in-memory state, signing keys,
//! the version channel long-polls wait on, caches, limiter state and metrics.

use crate::audit::{action, actor, NewEntry};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::live::{Live, Signers};
use crate::metrics::Metrics;
use crate::secrets;
use crate::store::{SigningKeyRow, Store, WriteTx};
use keygate_core::codec::hex_encode;
use keygate_core::ratelimit::FailureBackoff;
use keygate_core::snapshot::{encode_public_key, fingerprint, SnapshotSigner};
use keygate_core::token::{kid_for, TokenSigner};
use keygate_core::verify::EngineConfig;
use std::collections::HashMap;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::watch;

/// Name of the settings row holding the admin token's SHA-256.
const ADMIN_TOKEN_SETTING: &str = "admin_token_sha256";
/// The generated admin token's file name, in the state directory.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// A signed, encoded snapshot kept so it is built once per version, not per request.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub version: u64,
    pub base: u64,
    pub signer: [u8; 8],
    /// Shared, so answering a cached 80 MB snapshot copies nothing.
    pub bytes: axum::body::Bytes,
}

/// Per-address failure backoff state.
#[derive(Debug)]
pub struct Backoffs {
    policy: FailureBackoff,
    map: Mutex<HashMap<String, Vec<u8>>>,
}

impl Backoffs {
    fn new(policy: FailureBackoff) -> Self {
        Self {
            policy,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds `addr` must still wait, when it is locked out.
    pub fn blocked(&self, addr: &str) -> Option<u64> {
        let now = crate::timefmt::now_us();
        let map = self.map.lock().ok()?;
        self.policy.blocked(map.get(addr).map(Vec::as_slice), now)
    }

    pub fn failed(&self, addr: &str) {
        let now = crate::timefmt::now_us();
        if let Ok(mut map) = self.map.lock() {
            if map.len() > 100_000 {
                // Bound memory under a spray of addresses: keep only those locked out.
                let policy = self.policy;
                map.retain(|_, s| policy.blocked(Some(s), now).is_some());
            }
            let next = self
                .policy
                .record_failure(map.get(addr).map(Vec::as_slice), now);
            map.insert(addr.to_owned(), next);
        }
    }
}

pub struct Inner {
    pub cfg: Config,
    pub store: Store,
    pub live: RwLock<Live>,
    pub signers: RwLock<Arc<Signers>>,
    admin_hash: [u8; 32],
    pub version_tx: watch::Sender<u64>,
    pub shutdown_tx: watch::Sender<bool>,
    refresh_lock: tokio::sync::Mutex<()>,
    /// Serialises this process's writers (the chain row serialises processes).
    write_lock: tokio::sync::Mutex<()>,
    full_cache: tokio::sync::Mutex<Option<Encoded>>,
    delta_cache: Mutex<Option<(u64, Encoded)>>,
    filter_creds: RwLock<HashMap<String, String>>,
    pub metrics: Metrics,
    pub admin_failures: Backoffs,
    pub client_failures: Backoffs,
    pub rates: Mutex<HashMap<String, [u8; 8]>>,
    pub engine: EngineConfig,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("cfg", &self.cfg)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// What start-up tells the operator.
#[derive(Debug)]
pub struct Started {
    pub state: AppState,
    /// Set when keyd generated an admin token and wrote it to this file.
    pub admin_token_file: Option<PathBuf>,
}

/// A write in progress: the process write lock plus the database transaction.
pub struct Write<'a> {
    _guard: tokio::sync::MutexGuard<'a, ()>,
    pub tx: WriteTx,
}

impl std::fmt::Debug for Write<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.tx.fmt(f)
    }
}

fn new_signing_row(which: &str) -> Result<SigningKeyRow> {
    let seed = secrets::random::<32>()?;
    let (kid, public) = match which {
        "token" => {
            let s = TokenSigner::from_seed("", seed);
            let vk = s.verifying_key();
            (kid_for(&vk), vk.to_bytes())
        }
        _ => {
            let vk = SnapshotSigner::from_seed(seed).verifying_key();
            (hex_encode(&fingerprint(&vk)), vk.to_bytes())
        }
    };
    Ok(SigningKeyRow {
        kid,
        which: which.to_owned(),
        seed: hex_encode(&seed),
        public_key: hex_encode(&public),
        created_at: crate::timefmt::now(),
        retired_at: None,
        version: 0,
    })
}

/// Writes `token` to `path` readable by the owner only, replacing any old file atomically.
fn write_secret_file(path: &std::path::Path, token: &str) -> Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let ctx = |e| Error::io(format!("cannot write {}", path.display()), e);
    let mut f = opts.open(&tmp).map_err(ctx)?;
    f.write_all(format!("{token}\n").as_bytes()).map_err(ctx)?;
    f.sync_all().map_err(ctx)?;
    std::fs::rename(&tmp, path).map_err(ctx)?;
    Ok(())
}

impl AppState {
    /// Opens the database, creates signing keys and the admin token on first start, and
    /// loads the live state.
    pub async fn open(cfg: Config) -> Result<Started> {
        let store = Store::open(&cfg.db).await?;
        ensure_signing_keys(&store).await?;
        let (admin_hash, admin_token_file) = admin_token(&store, &cfg).await?;
        let signers = load_signers(&store, &cfg).await?;
        let engine = EngineConfig {
            token_max_lifetime: cfg.token_max_ttl,
            sig: cfg.sig.clone(),
            ..EngineConfig::default()
        };
        let (version_tx, _) = watch::channel(0u64);
        let (shutdown_tx, _) = watch::channel(false);
        let state = AppState(Arc::new(Inner {
            admin_failures: Backoffs::new(cfg.backoff),
            client_failures: Backoffs::new(cfg.backoff),
            cfg,
            store,
            live: RwLock::new(Live::default()),
            signers: RwLock::new(Arc::new(signers)),
            admin_hash,
            version_tx,
            shutdown_tx,
            refresh_lock: tokio::sync::Mutex::new(()),
            write_lock: tokio::sync::Mutex::new(()),
            full_cache: tokio::sync::Mutex::new(None),
            delta_cache: Mutex::new(None),
            filter_creds: RwLock::new(HashMap::new()),
            metrics: Metrics::default(),
            rates: Mutex::new(HashMap::new()),
            engine,
        }));
        state.refresh().await?;
        Ok(Started {
            state,
            admin_token_file,
        })
    }

    /// The version the live state holds.
    pub fn version(&self) -> u64 {
        self.live.read().map(|l| l.version()).unwrap_or(0)
    }

    pub fn signers(&self) -> Arc<Signers> {
        match self.signers.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The snapshot public key filters pin (current).
    pub fn snapshot_public_key(&self) -> String {
        encode_public_key(&self.signers().snapshot.verifying_key())
    }

    /// Constant-time check of a presented admin token.
    pub fn is_admin_token(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq as _;
        secrets::sha256(presented).ct_eq(&self.admin_hash).into()
    }

    pub async fn begin(&self, bump: bool) -> Result<Write<'_>> {
        let guard = self.write_lock.lock().await;
        let tx = self.store.begin_write(bump).await?;
        Ok(Write { _guard: guard, tx })
    }

    /// Commits a write and brings the live state (and every long-poll) up to date.
    pub async fn commit(&self, w: Write<'_>) -> Result<()> {
        let Write { _guard, tx } = w;
        tx.commit().await?;
        drop(_guard);
        if let Err(e) = self.refresh().await {
            // Committed is committed: the periodic re-check will catch up.
            self.metrics.refresh_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "reloading changes after a write failed");
        }
        Ok(())
    }

    /// Loads the changes made since the held version (by this or any other keyd) and
    /// wakes long-polls. Cheap when nothing changed: one single-row read.
    pub async fn refresh(&self) -> Result<()> {
        let _g = self.refresh_lock.lock().await;
        let head = self.store.head().await?;
        self.metrics
            .audit_entries
            .store(head.audit_seq, Ordering::Relaxed);
        let mine = self.version();
        let target = u64::try_from(head.version).unwrap_or(0);
        if target <= mine {
            return Ok(());
        }
        let rows = self
            .store
            .keys_changed(i64::try_from(mine).unwrap_or(i64::MAX), head.version)
            .await?;
        let now = crate::timefmt::now();
        let signers = load_signers(&self.store, &self.cfg).await?;
        let published = signers.published_token_keys(now, self.cfg.signing_key_retention);
        {
            let mut live = self
                .live
                .write()
                .map_err(|_| Error::Corrupt("live state lock poisoned".into()))?;
            live.apply_rows(&rows);
            live.set_signing_keys(published).map_err(Error::Corrupt)?;
            live.mem.version = target;
            live.mem.issued_at = now;
        }
        if let Ok(mut s) = self.signers.write() {
            *s = Arc::new(signers);
        }
        self.version_tx.send_replace(target);
        Ok(())
    }

    /// The full snapshot at the held version, signed; built once per version.
    pub async fn full_snapshot(&self) -> Result<Encoded> {
        let mut cache = self.full_cache.lock().await;
        let signers = self.signers();
        let fp = fingerprint(&signers.snapshot.verifying_key());
        if let Some(c) = cache.as_ref() {
            if c.version == self.version() && c.signer == fp {
                return Ok(c.clone());
            }
        }
        let st = self.clone();
        let built = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            // Clone under the read lock, sort and sign outside it: a big build must not
            // hold up the refresh that wants the write lock (and the verifies behind it).
            let unsorted = st
                .live
                .read()
                .map(|l| l.full_unsorted())
                .unwrap_or_default();
            let snap = crate::live::canonical(unsorted);
            let bytes = signers.snapshot.sign_full(&snap);
            let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            st.metrics
                .snapshot_full_build_us
                .store(us, Ordering::Relaxed);
            st.metrics
                .snapshot_full_bytes
                .store(bytes.len() as u64, Ordering::Relaxed);
            st.metrics
                .snapshot_full_builds
                .fetch_add(1, Ordering::Relaxed);
            Encoded {
                version: snap.version,
                base: 0,
                signer: fp,
                bytes: axum::body::Bytes::from(bytes),
            }
        })
        .await
        .map_err(|e| Error::Corrupt(format!("snapshot build task failed: {e}")))?;
        *cache = Some(built.clone());
        Ok(built)
    }

    /// The signed delta from `since` to the held version, or `None` when only a full
    /// snapshot will do. The latest delta is cached (every waiting filter asks for it).
    pub fn delta_snapshot(&self, since: u64) -> Option<Encoded> {
        let signers = self.signers();
        let fp = fingerprint(&signers.snapshot.verifying_key());
        let version = self.version();
        if let Ok(c) = self.delta_cache.lock() {
            if let Some((base, e)) = c.as_ref() {
                if *base == since && e.version == version && e.signer == fp {
                    return Some(e.clone());
                }
            }
        }
        let delta = self.live.read().ok()?.delta_since(since)?;
        let e = Encoded {
            version: delta.version,
            base: since,
            signer: fp,
            bytes: axum::body::Bytes::from(signers.snapshot.sign_delta(&delta)),
        };
        if let Ok(mut c) = self.delta_cache.lock() {
            *c = Some((since, e.clone()));
        }
        Some(e)
    }

    /// Checks a filter credential: memory first, then the database (another keyd may have
    /// created it). The text is only ever compared as a SHA-256 digest.
    pub async fn check_filter_credential(&self, text: &str) -> Result<bool> {
        let Some(id) = secrets::filter_credential_id(text) else {
            return Ok(false);
        };
        let digest = secrets::sha256(text);
        let cached = self
            .filter_creds
            .read()
            .ok()
            .and_then(|m| m.get(id).cloned());
        let stored = match cached {
            Some(d) => Some(d),
            None => {
                let d = self.store.filter_credential_digest(id).await?;
                if let (Some(d), Ok(mut m)) = (&d, self.filter_creds.write()) {
                    m.insert(id.to_owned(), d.clone());
                }
                d
            }
        };
        Ok(stored.is_some_and(|s| secrets::digest_matches(&digest, &s)))
    }

    pub fn shutting_down(&self) -> watch::Receiver<bool> {
        self.shutdown_tx.subscribe()
    }
}

async fn load_signers(store: &Store, cfg: &Config) -> Result<Signers> {
    let rows = store.signing_keys().await?;
    Signers::from_rows(&rows, crate::timefmt::now(), cfg.signing_key_retention)
        .map_err(|why| Error::Corrupt(format!("signing keys: {why}")))
}

/// First start: generate the token- and snapshot-signing keys. Safe when several keyd
/// start at once on one PostgreSQL: the check is repeated under the chain lock.
async fn ensure_signing_keys(store: &Store) -> Result<()> {
    let rows = store.signing_keys().await?;
    let has = |w: &str| rows.iter().any(|r| r.which == w && r.retired_at.is_none());
    if has("token") && has("snapshot") {
        return Ok(());
    }
    let mut tx = store.begin_write(true).await?;
    let mut created = false;
    for which in ["token", "snapshot"] {
        if tx.current_signing_key(which).await?.is_some() {
            continue;
        }
        let row = new_signing_row(which)?;
        tx.replace_signing_key(&row).await?;
        let public = keygate_core::codec::hex_decode::<32>(&row.public_key)
            .map(|b| keygate_core::codec::b64url_encode(&b))
            .unwrap_or_default();
        tx.audit(NewEntry {
            action: action::SIGNING_KEY_ROTATE,
            key_id: None,
            actor: actor::SYSTEM,
            detail: serde_json::json!({
                "which": which, "kid": row.kid, "public_key": public, "initial": true
            }),
        })
        .await?;
        created = true;
    }
    if created {
        tx.commit().await?;
        tracing::info!("generated signing keys (first start)");
    }
    Ok(())
}

/// The admin token's digest: from `KEYD_ADMIN_TOKEN`, else the stored one, else a new
/// token written to a 0600 file in the state directory.
async fn admin_token(store: &Store, cfg: &Config) -> Result<([u8; 32], Option<PathBuf>)> {
    if let Some(token) = &cfg.admin_token {
        let hex = secrets::sha256_hex(token);
        if store.setting(ADMIN_TOKEN_SETTING).await?.as_deref() != Some(hex.as_str()) {
            let mut tx = store.begin_write(false).await?;
            tx.set_setting(ADMIN_TOKEN_SETTING, &hex).await?;
            tx.commit().await?;
        }
        return Ok((secrets::sha256(token), None));
    }
    if let Some(hex) = store.setting(ADMIN_TOKEN_SETTING).await? {
        let digest = keygate_core::codec::hex_decode::<32>(&hex)
            .ok_or_else(|| Error::Corrupt("stored admin token digest".into()))?;
        return Ok((digest, None));
    }
    let mut tx = store.begin_write(false).await?;
    if let Some(hex) = tx.setting(ADMIN_TOKEN_SETTING).await? {
        let digest = keygate_core::codec::hex_decode::<32>(&hex)
            .ok_or_else(|| Error::Corrupt("stored admin token digest".into()))?;
        return Ok((digest, None));
    }
    let token = secrets::new_admin_token()?;
    crate::store::create_private_dir(&cfg.state_dir)?;
    let path = cfg.state_dir.join(ADMIN_TOKEN_FILE);
    write_secret_file(&path, &token)?;
    tx.set_setting(ADMIN_TOKEN_SETTING, &secrets::sha256_hex(&token))
        .await?;
    tx.commit().await?;
    Ok((secrets::sha256(&token), Some(path)))
}
