//! Snapshots for filters: credentials, full and delta answers, long-poll, signatures.

mod common;

use common::{pinned, Db, Keyd};
use keygate_core::snapshot::{decode, KeyStatus, MemStore, Payload};
use serde_json::Value;
use std::time::{Duration, Instant};

fn snapshot_full_delta_and_304(db: &Db) {
    let k = Keyd::start(db);
    // Filter credential: required, and the admin token is not one.
    let r = k.http.get(k.url("/v1/snapshot")).send().unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(k.snapshot(common::ADMIN, "").status(), 401);
    assert_eq!(
        k.snapshot(
            "kgf_aaaaaaaaaaaa_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            ""
        )
        .status(),
        401
    );
    let r = k.admin_post("/v1/filter-credentials", r#"{"name":"envoy-1"}"#);
    assert_eq!(r.status(), 201);
    let fc: Value = r.json().unwrap();
    let cred = fc["credential"].as_str().unwrap().to_owned();
    assert_eq!(fc["snapshot_public_keys"][0], k.snapshot_key.as_str());
    let e = k.last_audit();
    assert_eq!(e["action"], "filter_credential.create");
    assert_eq!(e["detail"]["id"], fc["id"]);
    assert!(!serde_json::to_string(&e).unwrap().contains(&cred));
    let (s, b) = {
        let r = k.admin_post("/v1/filter-credentials", r#"{"nom":"x"}"#);
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    assert_eq!((s, b["error"]["field"].as_str()), (400, Some("nom")));

    let a = k.issue(r#"{"name":"a","rate":"5/s","models":["llama3*"]}"#);
    let r = k.snapshot(&cred, "");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    let v: u64 = r.headers()["x-keygate-version"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = r.bytes().unwrap();
    let mut mem = MemStore::new();
    let p = decode(&bytes, &[pinned(&k)], usize::MAX).unwrap();
    assert_eq!(p.version(), v);
    mem.apply(p).unwrap();
    assert_eq!(mem.len(), 1);
    let rec = mem.records().next().unwrap().clone();
    assert_eq!(rec.id, a["id"].as_str().unwrap());
    assert_eq!(rec.name, "a");
    assert_eq!(rec.policy.models[0].as_str(), "llama3*");
    assert_eq!(rec.policy.rate.unwrap().spec.to_string(), "5/s");
    // The secret's digest, never the secret.
    let digest = keygate_core::apikey::Digest::of(a["key"].as_str().unwrap());
    assert_eq!(rec.digest, digest.0);

    // Up to date: 304 at once without wait, 304 after the wait with one.
    let r = k.snapshot(&cred, &format!("?since={v}"));
    assert_eq!(r.status(), 304);
    let t = Instant::now();
    let r = k.snapshot(&cred, &format!("?since={v}&wait=1"));
    assert_eq!(r.status(), 304);
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );

    // One change → a delta with exactly that key.
    let b = k.issue(r#"{"name":"b"}"#);
    let r = k.snapshot(&cred, &format!("?since={v}"));
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-keygate-snapshot-kind"], "delta");
    let bytes = r.bytes().unwrap();
    let p = decode(&bytes, &[pinned(&k)], usize::MAX).unwrap();
    let Payload::Delta(d) = &p else {
        panic!("expected a delta")
    };
    assert_eq!(d.base, v);
    assert_eq!(d.upserts.len(), 1);
    assert_eq!(d.upserts[0].id, b["id"].as_str().unwrap());
    println!("delta for one new key: {} bytes", bytes.len());
    mem.apply(p).unwrap();
    assert_eq!(mem.len(), 2);

    // Revoke → the record travels with status revoked.
    let v2 = mem.version;
    k.admin_post(
        &format!("/v1/keys/{}/revoke", a["id"].as_str().unwrap()),
        "{}",
    );
    let bytes = k.snapshot(&cred, &format!("?since={v2}")).bytes().unwrap();
    mem.apply(decode(&bytes, &[pinned(&k)], usize::MAX).unwrap())
        .unwrap();
    let rec = mem
        .records()
        .find(|r| r.id == a["id"].as_str().unwrap())
        .unwrap();
    assert_eq!(rec.status, KeyStatus::Revoked);
    // A full snapshot equals the state built from deltas.
    let full = decode(
        &k.snapshot(&cred, "").bytes().unwrap(),
        &[pinned(&k)],
        usize::MAX,
    )
    .unwrap();
    let Payload::Full(full) = full else { panic!() };
    assert_eq!(full, mem.to_snapshot());

    for (q, field) in [
        ("?since=x", "since"),
        ("?wait=-1", "wait"),
        ("?sinse=1", "sinse"),
    ] {
        let r = k.snapshot(&cred, q);
        assert_eq!(r.status(), 400, "{q}");
        let b: Value = r.json().unwrap();
        assert_eq!(b["error"]["field"], field);
    }
    // Built once per version: repeated full fetches do not rebuild.
    let m1 = k
        .http
        .get(k.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    k.snapshot(&cred, "");
    k.snapshot(&cred, "");
    let m2 = k
        .http
        .get(k.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let builds = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("keyd_snapshot_full_builds_total "))
            .unwrap()
            .to_owned()
    };
    assert_eq!(builds(&m1), builds(&m2));
}
both!(snapshot_full_delta_and_304);

fn longpoll_returns_promptly_after_revoke(db: &Db) {
    let k = Keyd::start(db);
    let cred = k.filter_credential();
    let a = k.issue(r#"{"name":"lp"}"#);
    let v = k.version();
    let url = k.url(&format!("/v1/snapshot?since={v}&wait=30"));
    let c2 = cred.clone();
    let waiter = std::thread::spawn(move || {
        let http = reqwest::blocking::Client::new();
        let r = http.get(url).bearer_auth(c2).send().unwrap();
        let done = Instant::now();
        (r.status().as_u16(), r.bytes().unwrap(), done)
    });
    // Let the request arrive and park.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = k
            .http
            .get(k.url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        if m.contains("keyd_longpoll_waiters 1") {
            break;
        }
        assert!(Instant::now() < deadline, "the long-poll never parked");
        std::thread::sleep(Duration::from_millis(20));
    }
    let id = a["id"].as_str().unwrap();
    let sent = Instant::now();
    let r = k.admin_post(&format!("/v1/keys/{id}/revoke"), "{}");
    let acked = Instant::now();
    assert_eq!(r.status(), 200);
    let (status, bytes, done) = waiter.join().unwrap();
    assert_eq!(status, 200);
    let latency = done.saturating_duration_since(sent);
    println!(
        "long-poll returned {:.1} ms after the revoke was sent ({:.1} ms after it was acknowledged)",
        latency.as_secs_f64() * 1000.0,
        done.saturating_duration_since(acked).as_secs_f64() * 1000.0
    );
    assert!(latency < Duration::from_secs(1), "{latency:?}");
    let Payload::Delta(d) = decode(&bytes, &[pinned(&k)], usize::MAX).unwrap() else {
        panic!("expected a delta")
    };
    assert_eq!(d.upserts.len(), 1);
    assert_eq!(d.upserts[0].status, KeyStatus::Revoked);
}
both!(longpoll_returns_promptly_after_revoke);

fn every_flipped_byte_is_rejected(db: &Db) {
    let k = Keyd::start(db);
    let cred = k.filter_credential();
    k.issue(r#"{"name":"f1","models":["qwen3:8b"],"rate":"100/m"}"#);
    k.issue(r#"{"name":"f2","expires_in":"1d"}"#);
    let v = k.version();
    k.issue(r#"{"name":"f3"}"#);
    let key = pinned(&k);
    for (what, q) in [("full", String::new()), ("delta", format!("?since={v}"))] {
        let bytes = k.snapshot(&cred, &q).bytes().unwrap().to_vec();
        assert!(
            decode(&bytes, &[key], usize::MAX).is_ok(),
            "{what} decodes intact"
        );
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut b = bytes.clone();
                b[i] ^= bit;
                assert!(
                    decode(&b, &[key], usize::MAX).is_err(),
                    "{what}: flipping bit {bit:#x} of byte {i} of {} was accepted",
                    bytes.len()
                );
            }
        }
        println!(
            "{what} snapshot: all {} single-byte flips rejected",
            bytes.len()
        );
    }
}
both!(every_flipped_byte_is_rejected);
