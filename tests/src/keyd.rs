//! The real keyd (SQLite in a temp dir) and keyctl, as child processes.

use crate::http::{self, Resp};
use crate::proc::{free_port, wait_for, Proc};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The admin token tests give keyd (via `KEYD_ADMIN_TOKEN`).
pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789abcdef";

#[derive(Debug)]
pub struct Keyd {
    pub port: u16,
    pub proc: Option<Proc>,
    bin: PathBuf,
    dir: PathBuf,
    /// `--database`: an SQLite file in `dir` unless started with [`Keyd::start_on`].
    database: String,
}

impl Keyd {
    /// Starts keyd on a fresh port with an SQLite database in `dir`.
    pub fn start(bin: &Path, dir: &Path) -> Keyd {
        let mut k = Keyd {
            port: free_port(),
            proc: None,
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            database: format!("sqlite://{}/keyd.db", dir.display()),
        };
        k.restart();
        k
    }

    /// Starts keyd on a fresh port with the given database URL (e.g. a PostgreSQL database
    /// several instances share); its log and state files go in `dir`.
    pub fn start_on(bin: &Path, dir: &Path, database: &str) -> Keyd {
        let mut k = Keyd {
            port: free_port(),
            proc: None,
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            database: database.to_owned(),
        };
        k.restart();
        k
    }

    /// (Re)starts keyd on the same port and database.
    pub fn restart(&mut self) {
        self.kill();
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--database")
            .arg(&self.database)
            .arg("--state-dir")
            .arg(&self.dir)
            .env("KEYD_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", "info");
        let proc = Proc::spawn("keyd", cmd, &self.dir);
        let url = self.url();
        let up = wait_for(Duration::from_secs(20), || {
            http::try_send("GET", &format!("{url}/healthz"), &[], None)
                .ok()
                .filter(|r| r.status == 200)
        });
        assert!(up.is_some(), "keyd did not start:\n{}", proc.output());
        self.proc = Some(proc);
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An admin API call; a non-2xx answer fails the test with keyd's message.
    pub fn admin(&self, method: &str, path: &str, body: Value) -> Value {
        let r = self.admin_raw(method, path, body);
        assert!(
            (200..300).contains(&r.status),
            "{method} {path}: HTTP {} {}",
            r.status,
            r.body
        );
        if r.body.is_empty() {
            Value::Null
        } else {
            r.json()
        }
    }

    pub fn admin_raw(&self, method: &str, path: &str, body: Value) -> Resp {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        http::send(
            method,
            &format!("{}{path}", self.url()),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            Some(body.to_string().as_bytes()),
        )
    }

    /// Issues a key; returns (id, secret).
    pub fn issue(&self, body: Value) -> (String, String) {
        let v = self.admin("POST", "/v1/keys", body);
        (
            v["id"].as_str().expect("id").to_owned(),
            v["key"].as_str().expect("key").to_owned(),
        )
    }

    pub fn revoke(&self, id: &str) {
        self.admin("POST", &format!("/v1/keys/{id}/revoke"), json!({}));
    }

    pub fn token(&self, id: &str, ttl: &str) -> String {
        let v = self.admin(
            "POST",
            &format!("/v1/keys/{id}/tokens"),
            json!({ "ttl": ttl }),
        );
        v["token"].as_str().expect("token").to_owned()
    }

    /// A filter credential and the snapshot keys to pin.
    pub fn filter_credential(&self) -> (String, Vec<String>) {
        let v = self.admin("POST", "/v1/filter-credentials", json!({ "name": "e2e" }));
        let keys = v["snapshot_public_keys"]
            .as_array()
            .expect("snapshot_public_keys")
            .iter()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect();
        (
            v["credential"].as_str().expect("credential").to_owned(),
            keys,
        )
    }
}

impl Keyd {
    /// The snapshot version keyd reports on `/healthz`.
    pub fn version(&self) -> u64 {
        http::get(&format!("{}/healthz", self.url()), &[]).json()["version"]
            .as_u64()
            .expect("keyd /healthz version")
    }

    /// Snapshot long-polls keyd is holding right now (`keyd_longpoll_waiters`).
    pub fn longpoll_waiters(&self) -> u64 {
        http::get(&format!("{}/metrics", self.url()), &[])
            .body
            .lines()
            .find_map(|l| l.strip_prefix("keyd_longpoll_waiters "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Keyd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// keyctl pointed at a keyd with the test admin token.
#[derive(Debug, Clone)]
pub struct Keyctl {
    pub bin: PathBuf,
    pub url: String,
}

/// What a keyctl run printed.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Keyctl {
    pub fn run(&self, args: &[&str]) -> Run {
        let out = Command::new(&self.bin)
            .arg("--url")
            .arg(&self.url)
            .args(args)
            .env("KEYD_ADMIN_TOKEN", ADMIN_TOKEN)
            .output()
            .unwrap_or_else(|e| panic!("cannot run keyctl: {e}"));
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs and requires success.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(
            r.code, 0,
            "keyctl {args:?} failed: {}{}",
            r.stdout, r.stderr
        );
        r.stdout
    }
}
