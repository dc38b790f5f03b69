//! Measurements for BENCHMARKS.md (ignored by default; run in release):
//!
//! ```text
//! cargo test -p keyd --release --test bench -- --ignored --nocapture --test-threads 1
//! ```
//!
//! Prints keys issued per second through a real keyd on SQLite, and the time and size of a
//! full snapshot at 100k and 1M keys and of a delta for one change.

mod common;

use common::{Db, Keyd};
use keyd::live::Live;
use keyd::store::KeyRow;
use keygate_core::snapshot::{decode, SnapshotSigner};
use std::time::Instant;

fn row(i: u64, version: i64) -> KeyRow {
    let h = keygate_core::apikey::Digest::of(&format!("id-{i}")).0;
    let id = keygate_core::apikey::KeyId::from_random(h[..8].try_into().unwrap()).to_string();
    KeyRow {
        id,
        kind: "api_key".into(),
        name: format!("key-{i}"),
        digest: keygate_core::apikey::Digest::of(&format!("secret-{i}")).to_hex(),
        prev_digest: None,
        prev_valid_until: None,
        status: "active".into(),
        routes: 3,
        models: if i % 4 == 0 {
            r#"["llama3*"]"#.into()
        } else {
            "[]".into()
        },
        rate: (i % 2 == 0).then(|| "10/s".into()),
        burst: None,
        expires_at: None,
        created_at: 1_800_000_000,
        rotated_at: None,
        revoked_at: None,
        revoke_reason: None,
        version,
    }
}

#[test]
#[ignore = "measurement: run in release with --ignored --nocapture"]
fn snapshot_build_and_delta_sizes() {
    let signer = SnapshotSigner::from_seed([7; 32]);
    let pinned = [signer.verifying_key()];
    for n in [100_000u64, 1_000_000] {
        let mut live = Live::default();
        let rows: Vec<KeyRow> = (0..n).map(|i| row(i, 1)).collect();
        live.apply_rows(&rows);
        live.mem.version = 1;
        assert_eq!(live.mem.len() as u64, n, "synthetic ids must be distinct");
        let t = Instant::now();
        let unsorted = live.full_unsorted();
        let clone = t.elapsed();
        let snap = keyd::live::canonical(unsorted);
        let collect = t.elapsed();
        println!(
            "  clone under lock {:.0} ms, sort {:.0} ms",
            clone.as_secs_f64() * 1e3,
            (collect - clone).as_secs_f64() * 1e3
        );
        let bytes = signer.sign_full(&snap);
        let total = t.elapsed();
        let t = Instant::now();
        decode(&bytes, &pinned, usize::MAX).unwrap();
        let verify = t.elapsed();
        println!(
            "full snapshot, {n} keys: build {:.0} ms (collect+sort {:.0} ms, encode+sign {:.0} ms), {:.1} MB ({} bytes, {:.1} B/key); decode+verify {:.0} ms",
            total.as_secs_f64() * 1e3,
            collect.as_secs_f64() * 1e3,
            (total - collect).as_secs_f64() * 1e3,
            bytes.len() as f64 / 1e6,
            bytes.len(),
            bytes.len() as f64 / n as f64,
            verify.as_secs_f64() * 1e3,
        );
        // One change (a revoke) at version 2.
        let mut changed = row(5, 2);
        changed.status = "revoked".into();
        changed.revoked_at = Some(1_800_000_100);
        live.apply_rows(&[changed]);
        live.mem.version = 2;
        let t = Instant::now();
        let delta = live.delta_since(1).unwrap();
        let dbytes = signer.sign_delta(&delta);
        println!(
            "delta for one change at {n} keys: {} bytes, built in {:.3} ms",
            dbytes.len(),
            t.elapsed().as_secs_f64() * 1e3
        );
        assert_eq!(delta.upserts.len(), 1);
    }
}

#[test]
#[ignore = "measurement: run in release with --ignored --nocapture"]
fn keys_issued_per_second() {
    let db = Db::sqlite();
    let k = std::sync::Arc::new(Keyd::start(&db));
    let n = 500;
    let t = Instant::now();
    for i in 0..n {
        k.issue(&format!(r#"{{"name":"s{i}"}}"#));
    }
    let one = t.elapsed();
    println!(
        "keys issued, 1 client, SQLite (synchronous=FULL): {n} in {:.2} s = {:.0}/s",
        one.as_secs_f64(),
        n as f64 / one.as_secs_f64()
    );
    let threads = 4;
    let t = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|w| {
            let k = k.clone();
            std::thread::spawn(move || {
                for i in 0..n / threads {
                    k.issue(&format!(r#"{{"name":"p{w}-{i}"}}"#));
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let four = t.elapsed();
    println!(
        "keys issued, {threads} clients, SQLite: {n} in {:.2} s = {:.0}/s",
        four.as_secs_f64(),
        n as f64 / four.as_secs_f64()
    );
}

#[test]
#[ignore = "measurement: run in release with --ignored --nocapture"]
fn verify_requests_per_second() {
    let db = Db::sqlite();
    let k = Keyd::start(&db);
    let v = k.issue(r#"{"name":"bench"}"#);
    let key = std::sync::Arc::new(format!("Bearer {}", v["key"].as_str().unwrap()));
    let url = std::sync::Arc::new(k.url("/v1/verify"));
    let (threads, per) = (4, 5000);
    let t = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let (key, url) = (key.clone(), url.clone());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::new();
                for _ in 0..per {
                    let r = http
                        .get(url.as_str())
                        .header("x-original-method", "POST")
                        .header("x-original-uri", "/api/chat")
                        .header("authorization", key.as_str())
                        .send()
                        .unwrap();
                    assert_eq!(r.status(), 200);
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let e = t.elapsed();
    println!(
        "/v1/verify, {threads} keep-alive clients on the same 2-core machine: {} requests in {:.2} s = {:.0}/s",
        threads * per,
        e.as_secs_f64(),
        (threads * per) as f64 / e.as_secs_f64()
    );
}
