//! The stock `ollama` CLI's signed requests (`OLLAMA_AUTH=1`) through Envoy: a signer that
//! reproduces the CLI, checked against the issue's vectors first.

use crate::stack::Real;
use keygate_e2e::http::{get, send};
use keygate_e2e::signer::{
    authorization, authorized_key_line, parse_openssh_private_key, unix_now,
};
use serde_json::json;
use std::time::{Duration, Instant};

const KEY1: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtz
c2gtZWQyNTUxOQAAACASyR4EcM31/sf/ROOT5qFmo3JiWbM/w2manJhvP4oDDAAA
AIgAXn6gAF5+oAAAAAtzc2gtZWQyNTUxOQAAACASyR4EcM31/sf/ROOT5qFmo3Ji
WbM/w2manJhvP4oDDAAAAEA7N2n3iSAY27mB7oeFUtFXqOnEhD34sxU25wP/Zbah
nRLJHgRwzfX+x/9E45PmoWajcmJZsz/DaZqcmG8/igMMAAAAAAECAwQF
-----END OPENSSH PRIVATE KEY-----";

const KEY2: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtz
c2gtZWQyNTUxOQAAACB3RAov4CHW+/crVjO5QtS5dn8U8YTn7mlM1eH6DC9gTAAA
AIh/R/2bf0f9mwAAAAtzc2gtZWQyNTUxOQAAACB3RAov4CHW+/crVjO5QtS5dn8U
8YTn7mlM1eH6DC9gTAAAAEBh0dA+yXjDwMdv4WAAS5his3nDwIgkSwDuYdBgkjkE
TXdECi/gIdb79ytWM7lC1Ll2fxTxhOfuaUzV4foML2BMAAAAAAECAwQF
-----END OPENSSH PRIVATE KEY-----";

#[test]
fn signer_reproduces_both_vectors() {
    let k1 = parse_openssh_private_key(KEY1).expect("vector 1 key");
    assert_eq!(
        authorization(&k1, "POST", "/api/chat", 1_735_689_600),
        "AAAAC3NzaC1lZDI1NTE5AAAAIBLJHgRwzfX+x/9E45PmoWajcmJZsz/DaZqcmG8/igMM:9W5SX6dNr9hbxErghSJeKlV+mMK/nSdyVwfx3rhkV7PhtuLs61SdIUpyBD6wnDXvbCVsKgEywvbZPN5LKofBAg=="
    );
    let k2 = parse_openssh_private_key(KEY2).expect("vector 2 key");
    assert_eq!(
        authorization(&k2, "HEAD", "/", 1_700_000_000),
        "AAAAC3NzaC1lZDI1NTE5AAAAIHdECi/gIdb79ytWM7lC1Ll2fxTxhOfuaUzV4foML2BM:ZVPcZqDA2r6Gpg2AosQVFLb0GpEN7VKCAQlOBlv0g56D3WcWosP60cojSPDvzV5tKRDSJl+ig97s0O7gCfPlBg=="
    );
}

/// A signed request exactly as the CLI sends it: `PATH?ts=NOW` with the signature.
fn signed(
    s: &Real,
    sk: &ed25519_dalek::SigningKey,
    method: &str,
    path: &str,
    ts: i64,
    body: Option<&serde_json::Value>,
) -> keygate_e2e::http::Resp {
    let auth = authorization(sk, method, path, ts);
    let b = body.map(|b| b.to_string().into_bytes());
    send(
        method,
        &s.url(&format!("{path}?ts={ts}")),
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ],
        b.as_deref(),
    )
}

#[test]
fn signed_requests_through_envoy() {
    let Some(s) = Real::start(|y| {
        keygate_e2e::envoy::plugin_set(&y, "failure_backoff", r#"{"enabled": false}"#)
    }) else {
        return;
    };
    let alice = parse_openssh_private_key(KEY1).expect("key");
    let mallory = parse_openssh_private_key(KEY2).expect("key");
    let out = s.keyctl.ok(&[
        "--json",
        "register",
        "--name",
        "alice-laptop",
        "--public-key",
        &authorized_key_line(&alice),
    ]);
    let id = serde_json::from_str::<serde_json::Value>(&out).expect("register --json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    s.synced();
    let now = unix_now();
    let r = signed(&s, &alice, "GET", "/api/tags", now, None);
    assert_eq!(r.status, 200, "{}", r.body);
    let chat = json!({ "model": "llama3.2", "stream": true,
                       "messages": [{ "role": "user", "content": "hi" }] });
    let r = signed(&s, &alice, "POST", "/api/chat", now, Some(&chat));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.lines().count() >= 10, "streamed NDJSON: {}", r.body);
    let seen = s.ollama.requests();
    assert_eq!(seen.len(), 2);
    for r in &seen {
        assert!(!r.path.contains("ts="), "ts forwarded: {}", r.path);
        assert_eq!(r.header("authorization"), None, "signature forwarded");
        assert_eq!(r.header("x-keygate-key-id").as_deref(), Some(id.as_str()));
    }
    assert_eq!(seen[0].path, "/api/tags");
    s.ollama.reset();

    // Unregistered key, stale ts, signature over another path: 401, nothing forwarded.
    let r = signed(&s, &mallory, "GET", "/api/tags", now, None);
    assert_eq!(
        (r.status, r.header("x-keygate-deny")),
        (401, Some("sig_unregistered_key"))
    );
    let r = signed(&s, &alice, "GET", "/api/tags", now - 3600, None);
    assert_eq!(
        (r.status, r.header("x-keygate-deny")),
        (401, Some("sig_stale"))
    );
    let auth = authorization(&alice, "GET", "/api/ps", now);
    let r = get(
        &s.url(&format!("/api/tags?ts={now}")),
        &[("authorization", auth.as_str())],
    );
    assert_eq!(
        (r.status, r.header("x-keygate-deny")),
        (401, Some("sig_bad_signature"))
    );

    // Revoked: refused within a second of keyctl returning.
    s.keyctl.ok(&["revoke", &id]);
    let returned = Instant::now();
    let mut refused = 0;
    while refused < 10 {
        assert!(
            returned.elapsed() < Duration::from_secs(1),
            "revoked public key still accepted"
        );
        let r = signed(&s, &alice, "GET", "/api/tags", unix_now(), None);
        if r.status == 401 {
            refused += 1;
        } else {
            refused = 0;
        }
    }
    assert!(s.ollama.requests().is_empty(), "{:?}", s.ollama.requests());
}
