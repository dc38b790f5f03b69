//! Several keyd instances on one PostgreSQL (issue 9): shared state, global versions,
//! cross-instance long-poll wake-ups, a linear audit chain under concurrent writers, and no
//! acknowledged write lost to SIGKILL. Needs `KEYD_TEST_DATABASE_URL` (fails under CI
//! without it).

mod common;

use common::{bearer, pinned, Db, Keyd};
use keygate_core::snapshot::{decode, Payload};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn all_key_ids(k: &Keyd) -> Vec<String> {
    let mut out = vec![];
    let mut after = String::new();
    loop {
        let v: Value = k
            .admin_get(&format!("/v1/keys?all=true&limit=1000&after={after}"))
            .json()
            .unwrap();
        for key in v["keys"].as_array().unwrap() {
            out.push(key["id"].as_str().unwrap().to_owned());
        }
        match v["next"].as_str() {
            Some(n) => after = n.to_owned(),
            None => return out,
        }
    }
}

#[test]
fn two_instances_share_state_and_wake_each_other() {
    let Some(db) = Db::postgres() else { return };
    let a = Keyd::start(&db);
    let b = Keyd::start(&db);
    assert_eq!(
        a.snapshot_key, b.snapshot_key,
        "one snapshot key for the cluster"
    );

    // A credential made through A works on B.
    let cred = a.filter_credential();
    assert_eq!(b.snapshot(&cred, "").status(), 200);

    // Issued through B, served by A.
    let k = b.issue(r#"{"name":"through-b"}"#);
    let key = k["key"].as_str().unwrap();
    let t = Instant::now();
    while a.verify("GET", "/api/tags", Some(&bearer(key))).status() != 200 {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "A did not learn B's key within 1 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "key issued on B verified on A after {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );

    // A long-poll held by A wakes on a revoke made through B.
    let v = a.version();
    assert_eq!(v, b.version());
    let url = a.url(&format!("/v1/snapshot?since={v}&wait=30"));
    let c2 = cred.clone();
    let waiter = std::thread::spawn(move || {
        let r = reqwest::blocking::Client::new()
            .get(url)
            .bearer_auth(c2)
            .send()
            .unwrap();
        (r.status().as_u16(), r.bytes().unwrap(), Instant::now())
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !a
        .http
        .get(a.url("/metrics"))
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
    let r = b.admin_post(
        &format!("/v1/keys/{}/revoke", k["id"].as_str().unwrap()),
        "{}",
    );
    assert_eq!(r.status(), 200);
    let (status, bytes, done) = waiter.join().unwrap();
    assert_eq!(status, 200);
    let latency = done.saturating_duration_since(sent);
    println!(
        "long-poll on A returned {:.1} ms after a revoke sent to B",
        latency.as_secs_f64() * 1e3
    );
    assert!(latency < Duration::from_secs(1), "{latency:?}");
    let Payload::Delta(d) = decode(&bytes, &[pinned(&a)], usize::MAX).unwrap() else {
        panic!("expected a delta")
    };
    assert_eq!(d.upserts[0].id, k["id"].as_str().unwrap());
    assert_eq!(
        a.verify("GET", "/api/tags", Some(&bearer(key))).status(),
        401
    );
}

#[test]
fn concurrent_issues_on_two_instances_lose_nothing() {
    let Some(db) = Db::postgres() else { return };
    let a = Arc::new(Keyd::start(&db));
    let b = Arc::new(Keyd::start(&db));
    let per_instance = 1000;
    let threads_per_instance = 4;
    let ids: Arc<Mutex<Vec<String>>> = Arc::default();
    let started = Instant::now();
    let mut handles = vec![];
    for k in [a.clone(), b.clone()] {
        for t in 0..threads_per_instance {
            let (k, ids) = (k.clone(), ids.clone());
            handles.push(std::thread::spawn(move || {
                for i in 0..per_instance / threads_per_instance {
                    let v = k.issue(&format!(r#"{{"name":"c{t}-{i}"}}"#));
                    ids.lock()
                        .unwrap()
                        .push(v["id"].as_str().unwrap().to_owned());
                }
            }));
        }
    }
    for h in handles {
        h.join().unwrap();
    }
    let elapsed = started.elapsed();
    let ids = ids.lock().unwrap().clone();
    println!(
        "{} keys issued through two instances in {:.2} s ({:.0}/s)",
        ids.len(),
        elapsed.as_secs_f64(),
        ids.len() as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(ids.len(), 2 * per_instance);
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "duplicated ids");
    let stored: HashSet<String> = all_key_ids(&a).into_iter().collect();
    assert_eq!(stored.len(), ids.len());
    for id in &ids {
        assert!(stored.contains(id), "{id} lost");
    }
    let v = b.audit_verify();
    assert_eq!(v["ok"], true, "{v}");
    // Both instances converge on the same global version and the same snapshot.
    let t = Instant::now();
    while a.version() != b.version() {
        assert!(t.elapsed() < Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(20));
    }
    let cred = a.filter_credential();
    let full = |k: &Keyd| match decode(
        &k.snapshot(&cred, "").bytes().unwrap(),
        &[pinned(k)],
        usize::MAX,
    )
    .unwrap()
    {
        Payload::Full(s) => s,
        Payload::Delta(_) => panic!("full expected"),
    };
    let (sa, sb) = (full(&a), full(&b));
    assert_eq!(sa.version, sb.version);
    assert_eq!(sa.keys, sb.keys);
    assert_eq!(sa.keys.len(), 2 * per_instance);
}

#[test]
fn sigkill_of_one_instance_loses_no_acknowledged_write() {
    let Some(db) = Db::postgres() else { return };
    let mut a = Keyd::start(&db);
    let b = Keyd::start(&db);
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = vec![];
    for w in 0..3 {
        let (acked, stop, url) = (acked.clone(), stop.clone(), a.url("/v1/keys"));
        workers.push(std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                match http
                    .post(&url)
                    .bearer_auth(common::ADMIN)
                    .body(format!(r#"{{"name":"k{w}-{i}"}}"#))
                    .send()
                {
                    Ok(r) if r.status() == 201 => {
                        if let Ok(v) = r.json::<Value>() {
                            acked.lock().unwrap().push((
                                v["id"].as_str().unwrap().to_owned(),
                                v["key"].as_str().unwrap().to_owned(),
                            ));
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(700));
    a.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    println!("A killed with {} acknowledged issues", acked.len());
    assert!(!acked.is_empty());
    // B serves every acknowledged key (after its periodic re-check at the latest).
    std::thread::sleep(Duration::from_millis(1500));
    for (id, key) in &acked {
        assert_eq!(
            b.admin_get(&format!("/v1/keys/{id}")).status(),
            200,
            "{id} lost"
        );
        assert_eq!(
            b.verify("GET", "/api/tags", Some(&bearer(key))).status(),
            200,
            "{id}"
        );
    }
    assert_eq!(b.audit_verify()["ok"], true);
    // Later changes through B keep working.
    let k = b.issue(r#"{"name":"after"}"#);
    assert_eq!(
        b.verify(
            "GET",
            "/api/tags",
            Some(&bearer(k["key"].as_str().unwrap()))
        )
        .status(),
        200
    );
}
