//! Keys changing while Envoy runs: revocation seen by every worker within a second,
//! rotation grace, keyd going away and coming back, staleness.

use crate::fixtures::{api_key, Stack};
use crate::stack::Real;
use keygate_core::snapshot::KeyStatus;
use keygate_e2e::envoy::plugin_set;
use keygate_e2e::http::{bearer, get, try_send};
use keygate_e2e::proc::wait_for;
use serde_json::json;
use std::time::{Duration, Instant};

/// Requests on fresh connections (so both workers answer) until `n` in a row give
/// `status`; returns when the first of that run was sent, relative to `since`.
fn until_consistently(url: &str, auth: &str, status: u16, n: usize, since: Instant) -> Duration {
    let mut run_start = None;
    let mut run = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while run < n {
        assert!(
            Instant::now() < deadline,
            "never got {n} x {status} in a row"
        );
        let sent = since.elapsed();
        let r = get(url, &[("authorization", auth)]);
        if r.status == status {
            run_start.get_or_insert(sent);
            run += 1;
        } else {
            run_start = None;
            run = 0;
        }
    }
    run_start.unwrap_or_default()
}

fn no_backoff(yaml: String) -> String {
    plugin_set(&yaml, "failure_backoff", r#"{"enabled": false}"#)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[test]
fn revocation_reaches_every_worker_within_a_second() {
    // Hundreds of deliberate 401s from one address: per-address backoff off here.
    let Some(s) = Real::start(no_backoff) else {
        return;
    };
    let keys: Vec<(String, String)> = (0..50)
        .map(|i| s.keyd.issue(json!({ "name": format!("k{i}") })))
        .collect();
    s.synced();
    let url = s.url("/api/tags");
    let mut after_return = Vec::new();
    let mut from_start = Vec::new();
    for (id, key) in &keys {
        let auth = bearer(key);
        assert_eq!(get(&url, &[("authorization", auth.as_str())]).status, 200);
        // A poller sends requests (fresh connections) while keyctl runs, to see when the
        // revocation lands relative to the start of `keyctl revoke`.
        let start = Instant::now();
        let poller = {
            let (url, auth) = (url.clone(), auth.clone());
            std::thread::spawn(move || until_consistently(&url, &auth, 401, 1, start))
        };
        s.keyctl.ok(&["revoke", id, "--reason", "e2e"]);
        let returned = Instant::now();
        // 10 in a row on fresh connections: with two workers, both answered.
        let l = until_consistently(&url, &auth, 401, 10, returned);
        assert!(
            l < Duration::from_secs(1),
            "revoked key still accepted {l:?} after revoke"
        );
        after_return.push(l);
        from_start.push(poller.join().expect("poller"));
    }
    after_return.sort();
    from_start.sort();
    eprintln!(
        "revocation over {} revocations: refused by every worker {:?} p50 / {:?} p99 after `keyctl revoke` returned; first refusal {:?} p50 / {:?} p99 after it started",
        after_return.len(),
        percentile(&after_return, 0.5),
        percentile(&after_return, 0.99),
        percentile(&from_start, 0.5),
        percentile(&from_start, 0.99),
    );
}

#[test]
fn rotation_grace_then_old_key_fails() {
    let Some(s) = Real::start(|y| y) else { return };
    let (id, old) = s.keyd.issue(json!({ "name": "rotating" }));
    s.synced();
    let out = s.keyctl.ok(&["rotate", &id, "--grace", "3s", "--quiet"]);
    let rotated = Instant::now();
    let new = out.trim().to_owned();
    assert!(
        new.starts_with("kg_") && new != old,
        "keyctl rotate printed {out:?}"
    );
    s.synced();
    for k in [&old, &new] {
        let r = get(&s.url("/api/tags"), &[("authorization", &bearer(k))]);
        assert_eq!(r.status, 200, "during grace: {}", r.body);
    }
    std::thread::sleep(
        Duration::from_secs(3).saturating_sub(rotated.elapsed()) + Duration::from_millis(1200),
    );
    let r = get(&s.url("/api/tags"), &[("authorization", &bearer(&old))]);
    assert_eq!(r.status, 401, "old key after grace: {}", r.body);
    let r = get(&s.url("/api/tags"), &[("authorization", &bearer(&new))]);
    assert_eq!(r.status, 200, "new key after grace: {}", r.body);
}

#[test]
fn keyd_down_keeps_last_snapshot_and_recovers() {
    let Some(mut s) = Real::start(no_backoff) else {
        return;
    };
    let (_, good) = s.keyd.issue(json!({ "name": "good" }));
    let (bad_id, bad) = s.keyd.issue(json!({ "name": "bad" }));
    s.keyd.revoke(&bad_id);
    s.synced();
    // Configured now (keyctl asks keyd for a credential), started once keyd is gone.
    let prepared = s.prepare_envoy(no_backoff);
    s.keyd.kill();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let r = get(&s.url("/api/tags"), &[("authorization", &bearer(&good))]);
        assert_eq!(r.status, 200, "existing key while keyd is down: {}", r.body);
        let r = get(&s.url("/api/tags"), &[("authorization", &bearer(&bad))]);
        assert_eq!(r.status, 401, "revoked key while keyd is down: {}", r.body);
        std::thread::sleep(Duration::from_millis(200));
    }
    // An Envoy started while keyd is down has nothing to decide with: 503.
    let fresh = s.start_prepared(&prepared);
    let r = get(
        &fresh.url("/api/tags"),
        &[("authorization", &bearer(&good))],
    );
    assert_eq!(
        (r.status, r.header("x-keygate-deny")),
        (503, Some("no_snapshot")),
        "{}",
        r.body
    );
    assert!(r.header("retry-after").is_some());
    // keyd comes back: both Envoys serve again, without a restart.
    s.keyd.restart();
    let back = Instant::now();
    let (_, later) = s.keyd.issue(json!({ "name": "after-restart" }));
    for envoy in [&s.envoy, &fresh] {
        let ok = wait_for(Duration::from_secs(20), || {
            let r = try_send(
                "GET",
                &envoy.url("/api/tags"),
                &[("authorization", &bearer(&later))],
                None,
            )
            .ok()?;
            (r.status == 200).then_some(())
        });
        assert!(
            ok.is_some(),
            "Envoy did not resume after keyd returned:\n{}",
            envoy.proc.output()
        );
    }
    eprintln!("service resumed {:?} after keyd restarted", back.elapsed());
    let r = get(&fresh.url("/api/tags"), &[("authorization", &bearer(&bad))]);
    assert_eq!(r.status, 401);
}

#[test]
fn stale_snapshot_answers_503_after_max_staleness() {
    let (key, rec) = api_key("stale");
    let Some(s) = Stack::start(vec![rec], |y| {
        let y = plugin_set(&y, "poll_wait", "\"1s\"");
        plugin_set(&y, "max_staleness", "\"3s\"")
    }) else {
        return;
    };
    let auth = bearer(key.expose_secret());
    assert_eq!(
        get(&s.envoy.url("/api/tags"), &[("authorization", &auth)]).status,
        200
    );
    let Stack {
        keyd,
        envoy,
        ollama: _ollama,
        dir: _dir,
    } = s;
    drop(keyd);
    let went = Instant::now();
    let stale = wait_for(Duration::from_secs(15), || {
        let r = get(&envoy.url("/api/tags"), &[("authorization", &auth)]);
        (r.status == 503).then_some(r)
    })
    .expect("never went stale");
    assert_eq!(stale.header("x-keygate-deny"), Some("snapshot_stale"));
    assert!(
        went.elapsed() >= Duration::from_secs(2),
        "stale too early: {:?}",
        went.elapsed()
    );
    assert!(envoy.stat("wasmcustom.keygate.sync_failures").unwrap_or(0) >= 1);
}

#[test]
fn forged_snapshots_are_never_applied() {
    let (key, rec) = api_key("forged");
    let Some(s) = Stack::start(vec![], |y| y) else {
        return;
    };
    // keyd's answers are now signed by a key the filter does not pin.
    s.keyd
        .forge_with(Some(keygate_core::snapshot::SnapshotSigner::from_seed(
            [99; 32],
        )));
    s.keyd.update(|snap| snap.keys.push(rec.clone()));
    let rejected = wait_for(Duration::from_secs(10), || {
        (s.envoy.stat("wasmcustom.keygate.snapshot_rejected")? >= 1).then_some(())
    });
    assert!(rejected.is_some(), "{}", s.envoy.proc.output());
    let r = get(
        &s.envoy.url("/api/tags"),
        &[("authorization", &bearer(key.expose_secret()))],
    );
    assert_eq!(
        (r.status, r.header("x-keygate-deny")),
        (401, Some("key_unknown"))
    );
    // Properly signed again: the key arrives.
    s.keyd.forge_with(None);
    s.keyd.update(|snap| {
        if let Some(k) = snap.keys.first_mut() {
            k.status = KeyStatus::Active;
        }
    });
    let ok = wait_for(Duration::from_secs(10), || {
        let r = get(
            &s.envoy.url("/api/tags"),
            &[("authorization", &bearer(key.expose_secret()))],
        );
        (r.status == 200).then_some(())
    });
    assert!(ok.is_some(), "{}", s.envoy.proc.output());
}

#[test]
fn one_fetch_loop_per_envoy() {
    let (_, rec) = api_key("loop");
    let Some(s) = Stack::start(vec![rec], |y| plugin_set(&y, "poll_wait", "\"2s\"")) else {
        return;
    };
    let before = s.keyd.fetches();
    std::thread::sleep(Duration::from_secs(5));
    let n = s.keyd.fetches() - before;
    // One long-poll of 2 s at a time: about 3 in 5 s. Two loops (one per worker) would
    // make about 5; the main thread's VM a third.
    assert!(
        (1..=4).contains(&n),
        "{n} snapshot fetches in 5 s with poll_wait 2s"
    );
}
