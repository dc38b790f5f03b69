//! API keys and tokens through the real Envoy, keyd and keyctl: who gets in, what reaches
//! Ollama, what the access log and stats say.

use crate::stack::Real;
use base64::Engine as _;
use keygate_e2e::envoy::plugin_set;
use keygate_e2e::http::{bearer, get, post_json, send};
use serde_json::json;

#[test]
fn bad_credentials_get_401_and_reach_nothing() {
    // Failure backoff off: this test makes more failures than it allows (tested below).
    let Some(s) = Real::start(|y| plugin_set(&y, "failure_backoff", r#"{"enabled": false}"#))
    else {
        return;
    };
    let (id, key) = s.keyd.issue(json!({ "name": "victim" }));
    let (rid, revoked) = s.keyd.issue(json!({ "name": "revoked" }));
    s.keyctl.ok(&["revoke", &rid]);
    let (_, expiring) = s.keyd.issue(json!({ "name": "short", "expires_in": "1s" }));
    // The right id with another secret (valid checksum), and a broken checksum.
    let wrong_secret = {
        let other = keygate_core::apikey::ApiKey::generate(
            &keygate_core::apikey::KeyId::parse(&id).unwrap(),
            [9; 32],
        );
        other.expose_secret().to_owned()
    };
    let mut bad_sum = key.clone();
    let last = bad_sum.pop().unwrap();
    bad_sum.push(if last == 'a' { 'b' } else { 'a' });
    s.synced();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let cases = [
        (None, "no_credential"),
        (Some("Bearer not-a-key".to_owned()), "key_wrong_prefix"),
        (Some(bearer(&wrong_secret)), "key_wrong_secret"),
        (Some(bearer(&bad_sum)), "key_bad_checksum"),
        (Some(bearer(&revoked)), "key_revoked"),
        (Some(bearer(&expiring)), "key_expired"),
    ];
    for (auth, code) in &cases {
        let h: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let r = get(&s.url("/api/tags"), &h);
        assert_eq!(r.status, 401, "{code}: {}", r.body);
        assert_eq!(r.header("x-keygate-deny"), Some(*code), "{}", r.body);
        assert!(r.header("www-authenticate").is_some());
        assert!(
            r.json()["error"].is_string(),
            "Ollama-shaped error: {}",
            r.body
        );
        let r = get(&s.url("/v1/models"), &h);
        assert_eq!(r.status, 401);
        assert_eq!(
            r.json()["error"]["code"],
            *code,
            "OpenAI-shaped error: {}",
            r.body
        );
    }
    assert!(
        s.ollama.requests().is_empty(),
        "denied requests reached Ollama: {:?}",
        s.ollama.requests()
    );
    let denied = s.envoy.stat("wasmcustom.keygate.denied").unwrap_or(0);
    assert!(denied >= 12, "denied counter {denied}");
    assert!(
        s.envoy
            .stat("wasmcustom.keygate.denied.key_revoked")
            .unwrap_or(0)
            >= 2
    );
}

#[test]
fn valid_key_reaches_ollama_without_its_credential() {
    let Some(s) = Real::start(|y| y) else { return };
    let (id, key) = s.keyd.issue(json!({ "name": "laptop" }));
    s.synced();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("x:{key}"));
    let forms = [
        ("authorization", bearer(&key)),
        ("x-api-key", key.clone()),
        ("authorization", format!("Basic {basic}")),
    ];
    for (h, v) in &forms {
        let r = get(
            &s.url("/api/tags"),
            &[(h, v.as_str()), ("x-keygate-key-id", "spoofed")],
        );
        assert_eq!(r.status, 200, "{h}: {}", r.body);
    }
    let seen = s.ollama.requests();
    assert_eq!(seen.len(), 3);
    for r in &seen {
        assert_eq!(
            r.header("authorization"),
            None,
            "credential forwarded: {r:?}"
        );
        assert_eq!(r.header("x-api-key"), None, "credential forwarded: {r:?}");
        assert_eq!(r.header("x-keygate-key-id").as_deref(), Some(id.as_str()));
        assert_eq!(r.header("x-keygate-key-name").as_deref(), Some("laptop"));
        // The fake runs with --loopback-host-check: it answered, so Host was rewritten.
        assert!(r
            .header("host")
            .unwrap_or_default()
            .starts_with("127.0.0.1:"));
    }
    // The access log names the key (and never the secret).
    let logged = keygate_e2e::proc::wait_for(std::time::Duration::from_secs(5), || {
        let log = s.envoy.access_log();
        log.iter()
            .any(|l| l["key_id"] == id.as_str() && l["status"] == 200)
            .then_some(())
    });
    assert!(logged.is_some(), "access log: {:?}", s.envoy.access_log());
    assert!(
        !s.envoy.proc.output().contains(&key),
        "the key appears in Envoy's output"
    );
    // Workers add up `allowed` and flush it every tick (200 ms).
    let counted = keygate_e2e::proc::wait_for(std::time::Duration::from_secs(2), || {
        (s.envoy.stat("wasmcustom.keygate.allowed").unwrap_or(0) >= 3).then_some(())
    });
    assert!(counted.is_some(), "keygate.allowed never reached 3");
    assert!(
        s.envoy
            .stat("wasmcustom.keygate.snapshot_version")
            .unwrap_or(0)
            >= 1
    );
}

#[test]
fn tokens_valid_and_invalid() {
    // A 1 s leeway so an expired token can be shown without waiting 30 s.
    let Some(s) = Real::start(|y| plugin_set(&y, "token_leeway", "\"1s\"")) else {
        return;
    };
    let (id, _) = s.keyd.issue(json!({ "name": "tok" }));
    let token = s
        .keyctl
        .ok(&["token", &id, "--ttl", "15m", "--quiet"])
        .trim()
        .to_owned();
    s.synced();
    for _ in 0..3 {
        let r = get(&s.url("/api/tags"), &[("authorization", &bearer(&token))]);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let parts: Vec<&str> = token.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header: serde_json::Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
    let none_header = b64.encode(json!({ "alg": "none", "kid": header["kid"] }).to_string());
    let alg_none = format!("{none_header}.{}.", parts[1]);
    let mut claims: serde_json::Value =
        serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    claims["exp"] = json!(claims["exp"].as_i64().unwrap() + 86_400);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(claims.to_string()),
        parts[2]
    );
    let stranger =
        keygate_core::token::TokenSigner::from_seed(header["kid"].as_str().unwrap(), [77; 32])
            .mint(&serde_json::from_value(claims.clone()).unwrap());
    let short = s.keyd.token(&id, "1s");
    std::thread::sleep(std::time::Duration::from_millis(2500));
    for (t, code) in [
        (alg_none, "token_alg_not_allowed"),
        (tampered, "token_bad_signature"),
        (stranger, "token_bad_signature"),
        (short, "token_expired"),
    ] {
        let r = get(&s.url("/api/tags"), &[("authorization", &bearer(&t))]);
        assert_eq!(
            (r.status, r.header("x-keygate-deny")),
            (401, Some(code)),
            "{}",
            r.body
        );
    }
    assert_eq!(
        s.ollama.requests().len(),
        3,
        "only the valid token's requests passed"
    );
}

#[test]
fn routes_and_models_are_enforced() {
    let Some(s) = Real::start(|y| y) else { return };
    let (_, plain) = s.keyd.issue(json!({ "name": "no-admin" }));
    s.synced();
    let auth = bearer(&plain);
    let h = [("authorization", auth.as_str())];
    let body = json!({ "model": "llama3.2" });
    for (method, path) in [
        ("POST", "/api/pull"),
        ("POST", "/api/push"),
        ("POST", "/api/create"),
        ("POST", "/api/copy"),
        ("DELETE", "/api/delete"),
        (
            "POST",
            "/api/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ),
    ] {
        let r = send(method, &s.url(path), &h, Some(body.to_string().as_bytes()));
        assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
    }
    let (limited_id, limited) = s
        .keyd
        .issue(json!({ "name": "llama-only", "models": ["llama3.2"] }));
    s.synced();
    let auth = bearer(&limited);
    let h = [("authorization", auth.as_str())];
    for (path, model, want) in [
        ("/api/chat", "llama3.2", 200),
        ("/api/chat", "LLAMA3.2:latest", 200),
        ("/api/chat", "qwen3:8b", 403),
        ("/api/chat", "QWEN3:8B", 403),
        ("/api/chat", "llama3.2:cloud", 403),
        ("/api/generate", "qwen3:8b", 403),
        ("/v1/chat/completions", "qwen3:8b", 403),
        ("/v1/chat/completions", "llama3.2", 200),
    ] {
        let body = json!({ "model": model, "stream": false, "prompt": "hi",
                           "messages": [{ "role": "user", "content": "hi" }] });
        let r = post_json(&s.url(path), &h, &body);
        assert_eq!(r.status, want, "{path} {model}: {}", r.body);
    }
    // A zstd body would hide the model from the filter (Ollama decompresses it): refused.
    let r = send(
        "POST",
        &s.url("/v1/chat/completions"),
        &[
            ("authorization", auth.as_str()),
            ("content-encoding", "zstd"),
        ],
        Some(b"\x28\xb5\x2f\xfd garbage"),
    );
    assert_eq!(r.status, 415, "{}", r.body);
    // Over the body bound: 413 from the filter.
    let big = format!(
        r#"{{"model":"llama3.2","prompt":"{}"}}"#,
        "x".repeat(9 * 1024 * 1024)
    );
    let r = send("POST", &s.url("/api/generate"), &h, Some(big.as_bytes()));
    assert_eq!(r.status, 413, "{}", r.body);
    // Refusals of an authenticated key name it in the access log.
    let logged = keygate_e2e::proc::wait_for(std::time::Duration::from_secs(5), || {
        s.envoy
            .access_log()
            .iter()
            .any(|l| l["key_id"] == limited_id.as_str() && l["deny"] == "model_not_allowed")
            .then_some(())
    });
    assert!(logged.is_some(), "access log: {:?}", s.envoy.access_log());
    let seen: Vec<String> = s.ollama.requests().iter().map(|r| r.body.clone()).collect();
    assert_eq!(
        seen.len(),
        3,
        "only the allowed requests reached Ollama: {seen:?}"
    );
}

#[test]
fn rate_limit_is_shared_across_workers() {
    let Some(s) = Real::start(|y| y) else { return };
    let (_, key) = s.keyd.issue(json!({ "name": "slow", "rate": "5/s" }));
    s.synced();
    let auth = bearer(&key);
    let start = std::time::Instant::now();
    let mut ok = 0;
    let mut limited = Vec::new();
    for _ in 0..15 {
        // Each request on a fresh connection: spread over both workers.
        let r = get(&s.url("/api/tags"), &[("authorization", auth.as_str())]);
        match r.status {
            200 => ok += 1,
            429 => limited.push(r),
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ceiling = 5 + (elapsed * 5.0).ceil() as usize;
    assert!(
        ok >= 5 && ok <= ceiling,
        "{ok} allowed in {elapsed:.2}s (at most {ceiling})"
    );
    assert!(!limited.is_empty());
    for r in &limited {
        let ra: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=2).contains(&ra), "Retry-After {ra}");
        assert_eq!(r.header("x-keygate-deny"), Some("rate_limited"));
    }
}

#[test]
fn repeated_failures_from_one_address_get_429() {
    let Some(s) = Real::start(|y| y) else { return };
    let (_, key) = s.keyd.issue(json!({ "name": "legit" }));
    s.synced();
    let mut statuses = Vec::new();
    for i in 0..12 {
        let guess = format!("Bearer kg_guess{i}");
        statuses.push(get(&s.url("/api/tags"), &[("authorization", guess.as_str())]).status);
    }
    assert_eq!(&statuses[..10], &[401; 10], "{statuses:?}");
    assert_eq!(statuses[11], 429, "{statuses:?}");
    // Locked out: even a valid key from this address waits (and learns nothing).
    let r = get(&s.url("/api/tags"), &[("authorization", &bearer(&key))]);
    assert_eq!(
        (r.status, r.header("x-keygate-deny")),
        (429, Some("too_many_failures"))
    );
    assert!(r.header("retry-after").is_some());
}
