//! Test harness: real keyd processes on 127.0.0.1 with ports chosen at run time, on a
//! fresh SQLite file or a fresh PostgreSQL database per test. Children are killed and
//! databases dropped when the handles drop.
#![allow(dead_code)]

use reqwest::blocking::{Client, Response};
use serde_json::Value;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const ADMIN: &str = "kga_test_admin_token_0123456789abcdef";

/// Where a test's keyd keeps its state.
pub struct Db {
    pub url: String,
    pub dir: tempfile::TempDir,
    pub pg_drop: Option<(String, String)>,
}

impl Db {
    pub fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        Db {
            url: format!("sqlite://{}", dir.path().join("keyd.db").display()),
            dir,
            pg_drop: None,
        }
    }

    /// A fresh database on the server named by `KEYD_TEST_DATABASE_URL`. Without it (or
    /// when the server does not answer): a failure under CI, a printed skip otherwise.
    pub fn postgres() -> Option<Db> {
        let base = match std::env::var("KEYD_TEST_DATABASE_URL") {
            Ok(u) if !u.is_empty() => u,
            _ => {
                if std::env::var_os("CI").is_some() {
                    panic!("KEYD_TEST_DATABASE_URL is not set: the PostgreSQL suite must run in CI (e.g. postgres://postgres@127.0.0.1:5432/postgres)");
                }
                eprintln!("SKIP: KEYD_TEST_DATABASE_URL is not set; PostgreSQL variant not run");
                return None;
            }
        };
        let name = format!("keyd_t_{}", hex_random());
        let made = rt().block_on(async {
            use sqlx::Connection as _;
            let mut c = sqlx::PgConnection::connect(&base).await?;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut c)
                .await?;
            Ok::<(), sqlx::Error>(())
        });
        if let Err(e) = made {
            if std::env::var_os("CI").is_some() {
                panic!("PostgreSQL at KEYD_TEST_DATABASE_URL is unreachable: {e}");
            }
            eprintln!("SKIP: PostgreSQL at KEYD_TEST_DATABASE_URL is unreachable: {e}");
            return None;
        }
        let (prefix, _) = base.rsplit_once('/').unwrap();
        Some(Db {
            url: format!("{prefix}/{name}"),
            dir: tempfile::tempdir().unwrap(),
            pg_drop: Some((base.clone(), name)),
        })
    }

    pub fn is_postgres(&self) -> bool {
        self.pg_drop.is_some()
    }

    /// Runs one SQL statement against the database directly (to tamper with it).
    pub fn exec(&self, sql: &str) -> u64 {
        let url = self.url.clone();
        let sql = sql.to_owned();
        rt().block_on(async move {
            sqlx::any::install_default_drivers();
            use sqlx::Connection as _;
            let mut c = sqlx::AnyConnection::connect(&url).await.unwrap();
            sqlx::query(&sql)
                .execute(&mut c)
                .await
                .unwrap()
                .rows_affected()
        })
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some((base, name)) = self.pg_drop.take() {
            let _ = rt().block_on(async move {
                use sqlx::Connection as _;
                let mut c = sqlx::PgConnection::connect(&base).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut c)
                    .await?;
                Ok::<(), sqlx::Error>(())
            });
        }
    }
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub fn hex_random() -> String {
    let mut b = [0u8; 6];
    getrandom::getrandom(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A running keyd. Killed (SIGKILL) on drop if still running.
pub struct Keyd {
    pub child: Option<Child>,
    pub base: String,
    pub snapshot_key: String,
    pub stderr_path: PathBuf,
    pub http: Client,
}

pub struct Opts<'a> {
    pub admin_token: Option<&'a str>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Default for Opts<'_> {
    fn default() -> Self {
        Self {
            admin_token: Some(ADMIN),
            args: vec![],
            env: vec![],
        }
    }
}

impl Keyd {
    pub fn start(db: &Db) -> Keyd {
        Self::start_with(db, Opts::default())
    }

    pub fn start_with(db: &Db, opts: Opts<'_>) -> Keyd {
        let stderr_path = db.dir.path().join(format!("keyd-{}.log", hex_random()));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyd"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--database", &db.url])
            .args(&opts.args)
            .env_remove("KEYD_ADMIN_TOKEN")
            .env_remove("KEYD_LISTEN")
            .env_remove("KEYD_DATABASE_URL")
            .env("XDG_DATA_HOME", db.dir.path().join("xdg"))
            .env("RUST_LOG", "info,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        if let Some(t) = opts.admin_token {
            cmd.env("KEYD_ADMIN_TOKEN", t);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start keyd");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut snapshot_key = String::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(k) = line.strip_prefix("snapshot-public-key: ") {
                        snapshot_key = k.to_owned();
                    }
                    if let Some(a) = line.strip_prefix("listening: ") {
                        break a.to_owned();
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                    panic!("keyd did not start within 30 s; its log:\n{log}");
                }
            }
        };
        Keyd {
            child: Some(child),
            base: format!("http://{addr}"),
            snapshot_key,
            stderr_path,
            http: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits up to `within` for exit; returns the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn admin_get(&self, path: &str) -> Response {
        self.http
            .get(self.url(path))
            .bearer_auth(ADMIN)
            .send()
            .unwrap()
    }

    pub fn admin_post(&self, path: &str, body: &str) -> Response {
        self.http
            .post(self.url(path))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .unwrap()
    }

    /// Issues a key and returns the answer (with the secret in `key`).
    pub fn issue(&self, body: &str) -> Value {
        let r = self.admin_post("/v1/keys", body);
        assert_eq!(r.status(), 201, "issue {body}");
        r.json().unwrap()
    }

    pub fn audit(&self, query: &str) -> Vec<Value> {
        let r = self.admin_get(&format!("/v1/audit{query}"));
        assert_eq!(r.status(), 200);
        let v: Value = r.json().unwrap();
        v["entries"].as_array().unwrap().clone()
    }

    pub fn last_audit(&self) -> Value {
        let all = self.audit("");
        all.last().cloned().unwrap()
    }

    pub fn audit_verify(&self) -> Value {
        self.admin_get("/v1/audit/verify").json().unwrap()
    }

    /// `/v1/verify` as nginx calls it.
    pub fn verify(&self, method: &str, uri: &str, auth: Option<&str>) -> Response {
        let mut r = self
            .http
            .get(self.url("/v1/verify"))
            .header("x-original-method", method)
            .header("x-original-uri", uri);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send().unwrap()
    }

    pub fn filter_credential(&self) -> String {
        let r = self.admin_post("/v1/filter-credentials", r#"{"name":"test-filter"}"#);
        assert_eq!(r.status(), 201);
        let v: Value = r.json().unwrap();
        v["credential"].as_str().unwrap().to_owned()
    }

    pub fn snapshot(&self, cred: &str, query: &str) -> Response {
        self.http
            .get(self.url(&format!("/v1/snapshot{query}")))
            .bearer_auth(cred)
            .send()
            .unwrap()
    }

    pub fn version(&self) -> u64 {
        let v: Value = self
            .http
            .get(self.url("/healthz"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["version"].as_u64().unwrap()
    }
}

impl Drop for Keyd {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn pinned(k: &Keyd) -> keygate_core::ed25519_dalek::VerifyingKey {
    keygate_core::snapshot::parse_public_key(&k.snapshot_key).expect("snapshot key")
}

pub fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

pub fn file_mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Declares a test that runs `$body(db)` on SQLite and, as `*_postgres`, on PostgreSQL.
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(&$crate::common::Db::sqlite());
            }
            #[test]
            fn postgres() {
                if let Some(db) = $crate::common::Db::postgres() {
                    super::$name(&db);
                }
            }
        }
    };
}
