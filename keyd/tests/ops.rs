//! Operations: durability under SIGKILL, graceful shutdown, audit tampering, the generated
//! admin token, `/v1/verify` for nginx and Caddy, the CLI subcommands.

mod common;

use common::{bearer, file_mode, Db, Keyd, Opts};
use serde_json::Value;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn durability_under_sigkill(db: &Db) {
    let mut k = Keyd::start(db);
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = vec![];
    for w in 0..3 {
        let (acked, stop, url) = (acked.clone(), stop.clone(), k.url("/v1/keys"));
        workers.push(std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let r = http
                    .post(&url)
                    .bearer_auth(common::ADMIN)
                    .body(format!(r#"{{"name":"w{w}-{i}"}}"#))
                    .send();
                match r {
                    Ok(r) if r.status() == 201 => {
                        let v: Value = match r.json() {
                            Ok(v) => v,
                            Err(_) => continue, // cut mid-body: not acknowledged
                        };
                        acked.lock().unwrap().push((
                            v["id"].as_str().unwrap().to_owned(),
                            v["key"].as_str().unwrap().to_owned(),
                        ));
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }));
    }
    // Kill at a random moment between 300 ms and 1.5 s into the loop.
    let mut r = [0u8; 2];
    getrandom::getrandom(&mut r).unwrap();
    let delay = 300 + u64::from(u16::from_le_bytes(r)) % 1200;
    std::thread::sleep(Duration::from_millis(delay));
    k.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    println!(
        "SIGKILL after {delay} ms: {} issues acknowledged",
        acked.len()
    );
    assert!(
        !acked.is_empty(),
        "no issue was acknowledged before the kill"
    );

    let k = Keyd::start(db);
    for (id, key) in &acked {
        let r = k.admin_get(&format!("/v1/keys/{id}"));
        assert_eq!(r.status(), 200, "acknowledged key {id} is lost");
        let r = k.verify("GET", "/api/tags", Some(&bearer(key)));
        assert_eq!(r.status(), 200, "acknowledged key {id} does not verify");
    }
    let v = k.audit_verify();
    assert_eq!(v["ok"], true, "{v}");
    // Every acknowledged issue has its audit entry.
    let issued: std::collections::HashSet<String> = k
        .audit("?action=key.issue&limit=1000")
        .iter()
        .map(|e| e["key_id"].as_str().unwrap().to_owned())
        .collect();
    for (id, _) in &acked {
        assert!(issued.contains(id), "no audit entry for {id}");
    }
}
both!(durability_under_sigkill);

fn sigterm_releases_longpolls_and_exits(db: &Db) {
    let mut k = Keyd::start(db);
    let cred = k.filter_credential();
    let v = k.version();
    let url = k.url(&format!("/v1/snapshot?since={v}&wait=60"));
    let waiter = std::thread::spawn(move || {
        let r = reqwest::blocking::Client::new()
            .get(url)
            .bearer_auth(cred)
            .send()
            .unwrap();
        (r.status().as_u16(), Instant::now())
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !k
        .http
        .get(k.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap()
        .contains("keyd_longpoll_waiters 1")
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = Instant::now();
    let status = k.terminate(Duration::from_secs(10));
    let (code, done) = waiter.join().unwrap();
    assert_eq!(
        code, 304,
        "a held long-poll is answered 'no change' on shutdown"
    );
    assert!(done.duration_since(sent) < Duration::from_secs(5));
    let status = status.expect("keyd did not exit within 10 s of SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(k.log().contains("shutting down"));
}
both!(sigterm_releases_longpolls_and_exits);

fn edited_and_deleted_audit_rows_are_reported(db: &Db) {
    let k = Keyd::start(db);
    for i in 0..4 {
        k.issue(&format!(r#"{{"name":"t{i}"}}"#));
    }
    assert_eq!(k.audit_verify()["ok"], true);
    let total = k.audit("").len() as i64;
    // Edit entry 4's detail.
    assert_eq!(
        db.exec(r#"UPDATE audit SET detail = '{"name":"mallory"}' WHERE seq = 4"#),
        1
    );
    let v = k.audit_verify();
    assert_eq!(v["ok"], false);
    assert_eq!(v["first_broken"]["seq"], 4, "{v}");
    assert_eq!(v["first_broken"]["reason"], "hash_mismatch");
    // The command line reports the same and exits non-zero.
    let out = Command::new(env!("CARGO_BIN_EXE_keyd"))
        .args(["audit-verify", "--database", &db.url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["first_broken"]["seq"], 4);
    // Delete entry 3: the gap is reported first, naming the missing entry.
    assert_eq!(db.exec("DELETE FROM audit WHERE seq = 3"), 1);
    let v = k.audit_verify();
    assert_eq!(v["first_broken"]["seq"], 3, "{v}");
    assert_eq!(v["first_broken"]["reason"], "missing_entry");
    assert_eq!(v["entries"], total - 1);
    // Deleting the newest entry is caught against the chain head.
    let db2 = if db.is_postgres() {
        Db::postgres().unwrap()
    } else {
        Db::sqlite()
    };
    let k2 = Keyd::start(&db2);
    k2.issue(r#"{"name":"tail"}"#);
    let last = k2.audit("").len();
    assert_eq!(
        db2.exec(&format!("DELETE FROM audit WHERE seq = {last}")),
        1
    );
    let v = k2.audit_verify();
    assert_eq!(v["first_broken"]["seq"], last as i64, "{v}");
    assert_eq!(v["first_broken"]["reason"], "missing_entry");
    let out = Command::new(env!("CARGO_BIN_EXE_keyd"))
        .args(["audit-verify", "--database", &db2.url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
}
both!(edited_and_deleted_audit_rows_are_reported);

#[test]
fn generated_admin_token_is_written_0600_and_never_logged() {
    let db = Db::sqlite();
    let k = Keyd::start_with(
        &db,
        Opts {
            admin_token: None,
            ..Opts::default()
        },
    );
    let path = db.dir.path().join("admin-token");
    let token = std::fs::read_to_string(&path).unwrap().trim().to_owned();
    assert!(token.starts_with("kga_") && token.len() == 47, "{token}");
    assert_eq!(file_mode(&path), 0o600);
    assert_eq!(file_mode(&db.dir.path().join("keyd.db")), 0o600);
    assert_eq!(file_mode(&db.dir.path().join("keyd.db-wal")), 0o600);
    let log = k.log();
    assert!(log.contains(&path.display().to_string()), "{log}");
    assert!(!log.contains(&token));
    assert!(log.contains(&k.snapshot_key));
    let r = k
        .http
        .get(k.url("/v1/keys"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(k);
    // The same token keeps working after a restart (only its hash is stored).
    let k = Keyd::start_with(
        &db,
        Opts {
            admin_token: None,
            ..Opts::default()
        },
    );
    let r = k
        .http
        .get(k.url("/v1/keys"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let before = k.snapshot_key.clone();
    drop(k);
    // KEYD_ADMIN_TOKEN replaces it; the snapshot key survives restarts.
    let k = Keyd::start(&db);
    assert_eq!(k.snapshot_key, before);
    let r = k
        .http
        .get(k.url("/v1/keys"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(k.admin_get("/v1/keys").status(), 200);
    assert!(!k.log().contains(common::ADMIN));
}

#[test]
fn default_database_is_in_the_data_dir_and_json_logs_work() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyd"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .env_remove("KEYD_DATABASE_URL")
        .env_remove("KEYD_ADMIN_TOKEN")
        .env("XDG_DATA_HOME", dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let db = dir.path().join("keygate/keyd.db");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.path().join("keygate/admin-token").exists() {
        assert!(Instant::now() < deadline, "no admin token file");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(db.exists());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("snapshot-public-key: ")),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(v["level"].is_string());
    }
}

#[test]
fn version_and_bad_config_exit_cleanly() {
    let out = Command::new(env!("CARGO_BIN_EXE_keyd"))
        .arg("version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("keyd "));
    let out = Command::new(env!("CARGO_BIN_EXE_keyd"))
        .args([
            "serve",
            "--database",
            "mysql://x",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sqlite://"));
    let out = Command::new(env!("CARGO_BIN_EXE_keyd"))
        .args([
            "serve",
            "--token-max-ttl",
            "forever",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token-max-ttl"));
}

fn verify_for_nginx_and_caddy(db: &Db) {
    let k = Keyd::start(db);
    let open = k.issue(r#"{"name":"open é"}"#);
    let open_key = open["key"].as_str().unwrap();
    let scoped = k.issue(r#"{"name":"scoped","models":["llama3*"]}"#);
    let scoped_key = scoped["key"].as_str().unwrap();
    let limited = k.issue(r#"{"name":"limited","rate":"2/m","burst":2}"#);
    let limited_key = limited["key"].as_str().unwrap();

    // nginx headers; allowed, with key id and name.
    let r = k.verify("GET", "/api/tags", Some(&bearer(open_key)));
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-keygate-key-id"],
        open["id"].as_str().unwrap()
    );
    assert_eq!(r.headers()["x-keygate-key-name"], "open %C3%A9");
    // Caddy headers and X-Api-Key.
    let r = k
        .http
        .get(k.url("/v1/verify"))
        .header("x-forwarded-method", "POST")
        .header("x-forwarded-uri", "/v1/chat/completions")
        .header("x-api-key", open_key)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // Route-level on model-scoped routes: no allowlist → allowed; allowlist → denied.
    assert_eq!(
        k.verify("POST", "/api/chat", Some(&bearer(open_key)))
            .status(),
        200
    );
    let r = k.verify("POST", "/api/chat", Some(&bearer(scoped_key)));
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-keygate-deny"], "model_unverifiable");
    // When the proxy passes the body, the model is checked.
    let with_body = |model: &str| {
        k.http
            .post(k.url("/v1/verify"))
            .header("x-original-method", "POST")
            .header("x-original-uri", "/api/chat")
            .bearer_auth(scoped_key)
            .body(format!(r#"{{"model":"{model}","messages":[]}}"#))
            .send()
            .unwrap()
    };
    assert_eq!(with_body("llama3.2").status(), 200);
    assert_eq!(with_body("qwen3").status(), 403);
    // Admin routes need the admin grant.
    let r = k.verify("POST", "/api/pull", Some(&bearer(open_key)));
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-keygate-deny"], "route_not_granted");
    // No credential: 401 with WWW-Authenticate, Ollama and OpenAI shaped bodies.
    let r = k.verify("GET", "/api/tags", None);
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("www-authenticate").is_some());
    let b: Value = r.json().unwrap();
    assert!(b["error"].is_string());
    let r = k.verify("POST", "/v1/chat/completions", None);
    let b: Value = r.json().unwrap();
    assert_eq!(b["error"]["code"], "no_credential");
    // Per-key rate: 2 then 429 with Retry-After.
    for _ in 0..2 {
        assert_eq!(
            k.verify("GET", "/api/tags", Some(&bearer(limited_key)))
                .status(),
            200
        );
    }
    let r = k.verify("GET", "/api/tags", Some(&bearer(limited_key)));
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(r.headers()["x-keygate-deny"], "rate_limited");
    // Missing original request headers.
    let r = k.http.get(k.url("/v1/verify")).send().unwrap();
    assert_eq!(r.status(), 400);
    // Failure backoff per client address as the (loopback) proxy reports it.
    let attempt = |ip: &str, key: &str| {
        k.http
            .get(k.url("/v1/verify"))
            .header("x-original-method", "GET")
            .header("x-original-uri", "/api/tags")
            .header("x-real-ip", ip)
            .bearer_auth(key)
            .send()
            .unwrap()
    };
    let bad = "kg_aaaaaaaaaaaa_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    for _ in 0..11 {
        assert_eq!(attempt("203.0.113.9", bad).status(), 401);
    }
    let r = attempt("203.0.113.9", open_key);
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-keygate-deny"], "too_many_failures");
    assert_eq!(attempt("203.0.113.10", open_key).status(), 200);
    // Revocation takes effect on the next call.
    k.admin_post(
        &format!("/v1/keys/{}/revoke", open["id"].as_str().unwrap()),
        "{}",
    );
    assert_eq!(
        k.verify("GET", "/api/tags", Some(&bearer(open_key)))
            .status(),
        401
    );
}
both!(verify_for_nginx_and_caddy);
