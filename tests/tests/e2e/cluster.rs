//! Several keyd instances on one PostgreSQL behind one Envoy (issue 9): the filter's keyd
//! cluster comes from `keyctl config envoy --keyd A --keyd B`; a change made through B
//! reaches a filter long-polling A within a second; SIGKILL of A interrupts neither service
//! nor sync; keys issued concurrently through both instances all work through Envoy.
//!
//! Needs `KEYD_TEST_DATABASE_URL` (a PostgreSQL server; each test makes its own database):
//! fails under CI without it, skips with a message otherwise.

use keygate_e2e::envoy::{plugin_set, port_of, Envoy};
use keygate_e2e::fake_ollama::FakeOllama;
use keygate_e2e::http::{bearer, try_send};
use keygate_e2e::keyd::{Keyctl, Keyd};
use keygate_e2e::pg::TestDatabase;
use keygate_e2e::proc::{free_port, wait_for};
use keygate_e2e::tools;
use serde_json::json;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Envoy in front of two keyd instances sharing one database. Fields drop in order: the
/// processes die before their database is dropped and their directory removed.
struct Cluster {
    envoy: Envoy,
    a: Keyd,
    b: Keyd,
    ollama: FakeOllama,
    _db: TestDatabase,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `None` (skipped) when a program or the PostgreSQL server is missing outside CI.
    fn start() -> Option<Cluster> {
        let envoy_bin = tools::envoy()?;
        let wasm = tools::wasm()?;
        let keyd_bin = tools::keyd()?;
        let keyctl_bin = tools::keyctl()?;
        let db = TestDatabase::create()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let (dir_a, dir_b) = (dir.path().join("keyd-a"), dir.path().join("keyd-b"));
        for d in [&dir_a, &dir_b] {
            std::fs::create_dir(d).expect("keyd dir");
        }
        // One after the other: the first runs the migrations.
        let a = Keyd::start_on(&keyd_bin, &dir_a, &db.url);
        let b = Keyd::start_on(&keyd_bin, &dir_b, &db.url);
        let ollama = FakeOllama::start(dir.path(), &["--loopback-host-check"]);
        let keyctl = Keyctl {
            bin: keyctl_bin,
            url: a.url(),
        };
        let listen = format!("127.0.0.1:{}", free_port());
        let admin = format!("127.0.0.1:{}", free_port());
        let yaml = keyctl.ok(&[
            "config",
            "envoy",
            "--listen",
            &listen,
            "--upstream",
            &ollama.url(),
            "--keyd",
            &a.url(),
            "--keyd",
            &b.url(),
            "--wasm",
            &wasm.display().to_string(),
            "--admin",
            &admin,
        ]);
        for k in [&a, &b] {
            assert!(
                yaml.contains(&format!("port_value: {} }}", k.port)),
                "the generated keyd cluster lacks {}:\n{yaml}",
                k.url()
            );
        }
        // These tests make many deliberate 401s from one address: per-address backoff off.
        let yaml = plugin_set(&yaml, "failure_backoff", r#"{"enabled": false}"#);
        let envoy = Envoy::start_yaml(
            &envoy_bin,
            dir.path(),
            &yaml,
            port_of(&listen),
            port_of(&admin),
        );
        envoy.wait_ready();
        Some(Cluster {
            envoy,
            a,
            b,
            ollama,
            _db: db,
            _dir: dir,
        })
    }

    /// Waits until the filter holds `keyd`'s current version (versions are global).
    fn synced_with(&self, keyd: &Keyd, within: Duration) -> Duration {
        let start = Instant::now();
        let want = keyd.version();
        let ok = wait_for(within, || {
            (self.envoy.stat("wasmcustom.keygate.snapshot_version")? >= want).then_some(())
        });
        assert!(
            ok.is_some(),
            "Envoy never reached version {want} within {within:?}:\n{}",
            self.envoy.proc.output()
        );
        start.elapsed()
    }

    /// Makes the filter's current long-poll sit on A (and none on B): each change makes
    /// the filter poll again, and the keyd cluster's round robin alternates the instances.
    fn poll_on_a(&self) {
        for round in 0..20 {
            let on_a = wait_for(Duration::from_millis(500), || {
                (self.a.longpoll_waiters() == 1 && self.b.longpoll_waiters() == 0).then_some(())
            });
            if on_a.is_some() {
                return;
            }
            self.b.issue(json!({ "name": format!("nudge-{round}") }));
            self.synced_with(&self.b, Duration::from_secs(5));
        }
        panic!(
            "the filter never long-polled A (waiters: A {}, B {})",
            self.a.longpoll_waiters(),
            self.b.longpoll_waiters()
        );
    }

    fn status(&self, key: &str) -> Result<u16, String> {
        try_send(
            "GET",
            &self.envoy.url("/api/tags"),
            &[("authorization", &bearer(key))],
            None,
        )
        .map(|r| r.status)
    }
}

/// Requests on fresh connections (so both workers answer) until `n` in a row give
/// `status`; returns when the first of that run was sent, relative to `since`.
fn until_consistently(
    c: &Cluster,
    key: &str,
    status: u16,
    n: usize,
    since: Instant,
    within: Duration,
) -> Duration {
    let mut run_start = None;
    let mut run = 0;
    while run < n {
        assert!(
            since.elapsed() < within,
            "never got {n} x {status} in a row within {within:?}:\n{}",
            c.envoy.proc.output()
        );
        let sent = since.elapsed();
        if c.status(key) == Ok(status) {
            run_start.get_or_insert(sent);
            run += 1;
        } else {
            run_start = None;
            run = 0;
        }
    }
    run_start.unwrap_or_default()
}

/// Sends a request with `key` every few ms on a fresh connection until stopped; keeps
/// every answer that was not a 200.
struct Steady {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl Steady {
    fn start(url: String, key: &str) -> Steady {
        let stop = Arc::new(AtomicBool::new(false));
        let auth = bearer(key);
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut sent, mut bad) = (0, Vec::new());
            while !s.load(Ordering::SeqCst) {
                let started = Instant::now();
                match try_send("GET", &url, &[("authorization", &auth)], None) {
                    Ok(r) if r.status == 200 => {}
                    Ok(r) => bad.push(format!("HTTP {} {}", r.status, r.body)),
                    Err(e) => bad.push(e),
                }
                sent += 1;
                if started.elapsed() > Duration::from_secs(1) {
                    bad.push(format!("a request took {:?}", started.elapsed()));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (sent, bad)
        });
        Steady { stop, thread }
    }

    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("steady requester")
    }
}

#[test]
fn revoke_through_b_reaches_a_filter_syncing_from_a_and_a_may_die() {
    let Some(mut c) = Cluster::start() else {
        return;
    };
    // A key issued through B works through Envoy.
    let (_, steady) = c.b.issue(json!({ "name": "steady" }));
    c.synced_with(&c.b, Duration::from_secs(10));
    assert_eq!(c.status(&steady), Ok(200), "a key issued through B");

    // Revocations made through B while the filter's long-poll sits on A.
    let mut latencies = Vec::new();
    for i in 0..5 {
        let (id, key) = c.b.issue(json!({ "name": format!("victim-{i}") }));
        c.synced_with(&c.b, Duration::from_secs(10));
        assert_eq!(c.status(&key), Ok(200));
        c.poll_on_a();
        let sent = Instant::now();
        c.b.revoke(&id);
        // 10 in a row on fresh connections: with two workers, both refused.
        let l = until_consistently(&c, &key, 401, 10, sent, Duration::from_secs(10));
        assert!(
            l < Duration::from_secs(1),
            "a revoke through B was enforced only {l:?} after it was sent"
        );
        latencies.push(l);
    }
    latencies.sort();
    eprintln!(
        "revoke through B, filter long-polling A: refused by every worker {:?} (median) / {:?} (max) after the revoke was sent",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );

    // SIGKILL A while the filter long-polls it: requests keep succeeding throughout, and
    // changes through B still arrive.
    let (victim_id, victim) = c.b.issue(json!({ "name": "victim-after-kill" }));
    c.synced_with(&c.b, Duration::from_secs(10));
    assert_eq!(c.status(&victim), Ok(200));
    c.poll_on_a();
    let load = Steady::start(c.envoy.url("/api/tags"), &steady);
    std::thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    c.a.kill();
    let (_, later) = c.b.issue(json!({ "name": "issued-after-kill" }));
    let issued = wait_for(Duration::from_secs(15), || {
        (c.status(&later) == Ok(200)).then_some(killed.elapsed())
    })
    .unwrap_or_else(|| {
        panic!(
            "a key issued through B after A died never worked:\n{}",
            c.envoy.proc.output()
        )
    });
    let sent = Instant::now();
    c.b.revoke(&victim_id);
    let revoked = until_consistently(&c, &victim, 401, 10, sent, Duration::from_secs(15));
    // Envoy's health checks take A out of the keyd cluster.
    let ejected = wait_for(Duration::from_secs(15), || {
        (c.envoy.stat("cluster.keyd.membership_healthy")? == 1).then(|| killed.elapsed())
    })
    .unwrap_or_else(|| {
        panic!(
            "Envoy never marked the dead keyd unhealthy:\n{}",
            keygate_e2e::http::get(
                &format!(
                    "http://127.0.0.1:{}/stats?filter=cluster.keyd.(membership|health_check)",
                    c.envoy.admin
                ),
                &[]
            )
            .body
        )
    });
    // With A out, a change through B arrives as fast as before.
    let (third_id, third) = c.b.issue(json!({ "name": "after-ejection" }));
    let arrived = until_consistently(&c, &third, 200, 1, Instant::now(), Duration::from_secs(5));
    assert!(
        arrived < Duration::from_secs(1),
        "a key issued through B after A's ejection took {arrived:?}"
    );
    let sent = Instant::now();
    c.b.revoke(&third_id);
    let revoked_late = until_consistently(&c, &third, 401, 10, sent, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    let (sent_total, bad) = load.finish();
    eprintln!(
        "A killed: key issued through B worked {issued:?} after the kill; revoke through B enforced {revoked:?} after it was sent; A marked unhealthy {ejected:?} after the kill; later revoke enforced in {revoked_late:?}; {sent_total} requests during all this, {} failed",
        bad.len()
    );
    assert!(
        bad.is_empty(),
        "service was interrupted when A died ({} of {sent_total} requests): {:?}",
        bad.len(),
        bad.iter().take(5).collect::<Vec<_>>()
    );
    assert!(
        sent_total > 50,
        "too few requests to show anything: {sent_total}"
    );
    assert!(
        issued < Duration::from_secs(3),
        "B's new key took {issued:?} to arrive after A died"
    );
    assert!(
        revoked < Duration::from_secs(3),
        "B's revoke took {revoked:?} to be enforced after A died"
    );
    assert!(revoked_late < Duration::from_secs(1), "{revoked_late:?}");
    // What reached Ollama came without the credential.
    let seen = c.ollama.requests();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|r| r.header("authorization").is_none()));
}

#[test]
fn keys_issued_concurrently_through_both_instances_all_work_through_envoy() {
    let Some(c) = Cluster::start() else { return };
    let per_instance = 500;
    let threads_per_instance = 4;
    let applied_before = c
        .envoy
        .stat("wasmcustom.keygate.snapshot_applied")
        .unwrap_or(0);
    let issued: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let started = Instant::now();
    std::thread::scope(|s| {
        for k in [&c.a, &c.b] {
            for t in 0..threads_per_instance {
                let issued = issued.clone();
                s.spawn(move || {
                    for i in 0..per_instance / threads_per_instance {
                        let key = k.issue(json!({ "name": format!("c{}-{t}-{i}", k.port) }));
                        issued.lock().expect("lock").push(key);
                    }
                });
            }
        }
    });
    let took = started.elapsed();
    let issued = issued.lock().expect("lock").clone();
    assert_eq!(issued.len(), 2 * per_instance);
    let ids: HashSet<&str> = issued.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), issued.len(), "duplicated key ids");
    assert_eq!(c.a.version(), c.b.version(), "one global version");
    let sync = c.synced_with(&c.a, Duration::from_secs(20));
    let applied = c
        .envoy
        .stat("wasmcustom.keygate.snapshot_applied")
        .unwrap_or(0)
        - applied_before;
    // The filter followed along while the writes went on, not once at the end.
    assert!(
        applied >= 2,
        "the filter applied {applied} snapshots while 1,000 keys were issued"
    );
    // Every key works through Envoy (4 client threads, fresh connections).
    let failed: Mutex<Vec<String>> = Mutex::default();
    let checked = Instant::now();
    std::thread::scope(|s| {
        for part in issued.chunks(issued.len().div_ceil(4)) {
            let (c, failed) = (&c, &failed);
            s.spawn(move || {
                for (id, key) in part {
                    match c.status(key) {
                        Ok(200) => {}
                        other => failed
                            .lock()
                            .expect("lock")
                            .push(format!("{id}: {other:?}")),
                    }
                }
            });
        }
    });
    let failed = failed.into_inner().expect("lock");
    eprintln!(
        "{} keys issued through two instances in {took:?}; Envoy caught up {sync:?} after the last, having applied {applied} snapshots; all checked through Envoy in {:?}",
        issued.len(),
        checked.elapsed()
    );
    assert!(
        failed.is_empty(),
        "{} of {} keys failed through Envoy: {:?}",
        failed.len(),
        issued.len(),
        failed.iter().take(10).collect::<Vec<_>>()
    );
}
