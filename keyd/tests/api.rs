//! The admin and client API against a real keyd process: every operation, its
//! 401/400/404/409 answers, and the audit entry it leaves. Each test runs on SQLite and
//! (as `…::postgres`) on PostgreSQL.

mod common;

use common::{bearer, Db, Keyd, ADMIN};
use serde_json::Value;

fn error_field(r: reqwest::blocking::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn audit_count(k: &Keyd) -> usize {
    k.audit("").len()
}

fn admin_auth_required_and_audited(db: &Db) {
    let k = Keyd::start(db);
    let before = audit_count(&k);
    let r = k.http.get(k.url("/v1/keys")).send().unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("www-authenticate").is_some());
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated");
    let r = k
        .http
        .post(k.url("/v1/keys"))
        .bearer_auth("kga_wrong_token_wrong_token_wrong")
        .body(r#"{"name":"x"}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    // The failed attempt wrote nothing but its audit entry.
    let entries = k.audit("?action=admin.auth_failed");
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["detail"]["reason"], "missing_token");
    assert_eq!(entries[1]["detail"]["reason"], "invalid_token");
    assert_eq!(entries[1]["actor"], "anonymous");
    assert_eq!(entries[1]["detail"]["route"], "/v1/keys");
    assert_eq!(audit_count(&k), before + 2);
    let keys: Value = k.admin_get("/v1/keys?all=true").json().unwrap();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 0);
    // Every admin route refuses without the token.
    for (m, p) in [
        ("GET", "/v1/keys/aaaaaaaaaaaa"),
        ("POST", "/v1/keys/aaaaaaaaaaaa/rotate"),
        ("POST", "/v1/keys/aaaaaaaaaaaa/revoke"),
        ("POST", "/v1/keys/aaaaaaaaaaaa/tokens"),
        ("POST", "/v1/public-keys"),
        ("GET", "/v1/audit"),
        ("GET", "/v1/audit/verify"),
        ("POST", "/v1/signing-keys/rotate"),
        ("POST", "/v1/filter-credentials"),
    ] {
        let r = k.http.request(m.parse().unwrap(), k.url(p)).send().unwrap();
        assert_eq!(r.status(), 401, "{m} {p}");
    }
    // 11 failures from this address: the next is refused without an audit write, while
    // the right token still works.
    let r = k
        .http
        .get(k.url("/v1/keys"))
        .bearer_auth("kga_guess")
        .send()
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(k.audit("?action=admin.auth_failed").len(), 11);
    assert_eq!(k.audit_verify()["ok"], true);
}
both!(admin_auth_required_and_audited);

fn issue_show_list(db: &Db) {
    let k = Keyd::start(db);
    let v = k.issue(
        r#"{"name":"alice","routes":["inference"],"models":["llama3*"],"rate":"10/s","burst":20,"expires_in":"30d"}"#,
    );
    let id = v["id"].as_str().unwrap();
    let secret = v["key"].as_str().unwrap();
    assert!(secret.starts_with(&format!("kg_{id}_")));
    assert_eq!(v["kind"], "api_key");
    assert_eq!(v["status"], "active");
    assert_eq!(v["routes"], serde_json::json!(["inference"]));
    assert_eq!(v["models"], serde_json::json!(["llama3*"]));
    assert_eq!(v["rate"], "10/s");
    assert_eq!(v["burst"], 20);
    assert!(v["expires_at"].is_string());
    let e = k.last_audit();
    assert_eq!(e["action"], "key.issue");
    assert_eq!(e["key_id"], id);
    assert_eq!(e["actor"], "admin");
    assert_eq!(e["detail"]["name"], "alice");
    // The secret is in no audit entry.
    assert!(!serde_json::to_string(&k.audit(""))
        .unwrap()
        .contains(secret));

    let shown: Value = k.admin_get(&format!("/v1/keys/{id}")).json().unwrap();
    assert_eq!(shown["id"], id);
    assert!(
        shown.get("key").is_none(),
        "the secret is shown only at issue"
    );
    assert_eq!(shown["name"], "alice");

    // Default grant: inference + read.
    let b = k.issue(r#"{"name":"bob"}"#);
    assert_eq!(b["routes"], serde_json::json!(["inference", "read"]));
    let c = k.issue(r#"{"name":"carol"}"#);
    let r = k.admin_post(
        &format!("/v1/keys/{}/revoke", c["id"].as_str().unwrap()),
        "{}",
    );
    assert_eq!(r.status(), 200);

    let active: Value = k.admin_get("/v1/keys").json().unwrap();
    assert_eq!(active["keys"].as_array().unwrap().len(), 2);
    let all: Value = k.admin_get("/v1/keys?all=true").json().unwrap();
    assert_eq!(all["keys"].as_array().unwrap().len(), 3);
    assert!(all["next"].is_null());
    // Pagination by id.
    let p1: Value = k.admin_get("/v1/keys?all=true&limit=2").json().unwrap();
    assert_eq!(p1["keys"].as_array().unwrap().len(), 2);
    let next = p1["next"].as_str().unwrap();
    let p2: Value = k
        .admin_get(&format!("/v1/keys?all=true&limit=2&after={next}"))
        .json()
        .unwrap();
    assert_eq!(p2["keys"].as_array().unwrap().len(), 1);
    let mut ids: Vec<String> = p1["keys"]
        .as_array()
        .unwrap()
        .iter()
        .chain(p2["keys"].as_array().unwrap())
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect();
    let sorted = {
        let mut s = ids.clone();
        s.sort();
        s
    };
    assert_eq!(ids, sorted);
    ids.dedup();
    assert_eq!(ids.len(), 3);

    // 404s.
    let (s, b) = error_field(k.admin_get("/v1/keys/aaaaaaaaaaaa"));
    assert_eq!((s, b["error"]["code"].as_str()), (404, Some("not_found")));
    assert_eq!(k.admin_get("/v1/keys/not-an-id").status(), 404);
    // Bad query.
    let (s, b) = error_field(k.admin_get("/v1/keys?limit=0"));
    assert_eq!((s, b["error"]["field"].as_str()), (400, Some("limit")));
    let (s, b) = error_field(k.admin_get("/v1/keys?colour=red"));
    assert_eq!((s, b["error"]["field"].as_str()), (400, Some("colour")));
}
both!(issue_show_list);

fn issue_bad_input_names_the_field(db: &Db) {
    let k = Keyd::start(db);
    let before = audit_count(&k);
    let long = "n".repeat(129);
    let cases: Vec<(String, &str)> = vec![
        (r#"{"name":"x","colour":"red"}"#.into(), "colour"),
        (r#"{"routes":["read"]}"#.into(), "name"),
        (format!(r#"{{"name":"{long}"}}"#), "name"),
        (r#"{"name":""}"#.into(), "name"),
        (r#"{"name":"a\u0007b"}"#.into(), "name"),
        (r#"{"name":"x","routes":["everything"]}"#.into(), "routes"),
        (r#"{"name":"x","routes":[]}"#.into(), "routes"),
        (r#"{"name":"x","models":["bad model!"]}"#.into(), "models"),
        (r#"{"name":"x","rate":"10/d"}"#.into(), "rate"),
        (r#"{"name":"x","rate":"0/s"}"#.into(), "rate"),
        (r#"{"name":"x","burst":5}"#.into(), "burst"),
        (r#"{"name":"x","rate":"1/s","burst":-1}"#.into(), "burst"),
        (r#"{"name":"x","rate":"1/s","burst":0}"#.into(), "burst"),
        (r#"{"name":"x","expires_in":"soon"}"#.into(), "expires_in"),
        (r#"{"name":"x","expires_in":"0s"}"#.into(), "expires_in"),
        (r#"{"name":5}"#.into(), "name"),
    ];
    for (body, field) in &cases {
        let (s, b) = error_field(k.admin_post("/v1/keys", body));
        assert_eq!(s, 400, "{body}: {b}");
        assert_eq!(b["error"]["code"], "invalid_argument", "{body}");
        assert_eq!(b["error"]["field"], *field, "{body}: {b}");
    }
    let (s, b) = error_field(k.admin_post("/v1/keys", r#"{"name":"#));
    assert_eq!(s, 400);
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    let huge = format!(r#"{{"name":"{}"}}"#, "x".repeat(100_000));
    assert_eq!(k.admin_post("/v1/keys", &huge).status(), 413);
    // Nothing was written by any of them.
    assert_eq!(audit_count(&k), before);
    let all: Value = k.admin_get("/v1/keys?all=true").json().unwrap();
    assert_eq!(all["keys"].as_array().unwrap().len(), 0);
}
both!(issue_bad_input_names_the_field);

fn rotate_keeps_old_secret_for_grace(db: &Db) {
    let k = Keyd::start(db);
    let v = k.issue(r#"{"name":"rot"}"#);
    let id = v["id"].as_str().unwrap();
    let old = v["key"].as_str().unwrap();
    let r = k.admin_post(&format!("/v1/keys/{id}/rotate"), r#"{"grace":"1h"}"#);
    assert_eq!(r.status(), 200);
    let rot: Value = r.json().unwrap();
    let new = rot["key"].as_str().unwrap();
    assert_ne!(new, old);
    assert!(rot["old_valid_until"].is_string());
    assert_eq!(rot["id"], id);
    let e = k.last_audit();
    assert_eq!(e["action"], "key.rotate");
    assert_eq!(e["key_id"], id);
    assert_eq!(e["detail"]["grace_secs"], 3600);
    assert!(!serde_json::to_string(&e).unwrap().contains(new));
    // Both secrets work during the grace period.
    assert_eq!(
        k.verify("GET", "/api/tags", Some(&bearer(new))).status(),
        200
    );
    assert_eq!(
        k.verify("GET", "/api/tags", Some(&bearer(old))).status(),
        200
    );
    let shown: Value = k.admin_get(&format!("/v1/keys/{id}")).json().unwrap();
    assert!(shown["rotated_at"].is_string());
    assert!(shown["old_valid_until"].is_string());

    let (s, b) = error_field(k.admin_post(&format!("/v1/keys/{id}/rotate"), r#"{"grace":"0s"}"#));
    assert_eq!((s, b["error"]["field"].as_str()), (400, Some("grace")));
    assert!(b["error"]["message"].as_str().unwrap().contains("revoke"));
    let (s, b) = error_field(k.admin_post(&format!("/v1/keys/{id}/rotate"), r#"{"grce":"1h"}"#));
    assert_eq!((s, b["error"]["field"].as_str()), (400, Some("grce")));
    assert_eq!(
        k.admin_post("/v1/keys/aaaaaaaaaaaa/rotate", "{}").status(),
        404
    );
    // Default grace (empty body) works.
    let r = k.admin_post(&format!("/v1/keys/{id}/rotate"), "");
    assert_eq!(r.status(), 200);
    let newest: Value = r.json().unwrap();
    assert_eq!(
        k.verify(
            "GET",
            "/api/tags",
            Some(&bearer(newest["key"].as_str().unwrap()))
        )
        .status(),
        200
    );
    // The first secret was replaced twice: it no longer works.
    assert_eq!(
        k.verify("GET", "/api/tags", Some(&bearer(old))).status(),
        401
    );
    k.admin_post(&format!("/v1/keys/{id}/revoke"), "{}");
    let (s, b) = error_field(k.admin_post(&format!("/v1/keys/{id}/rotate"), "{}"));
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("conflict")));
}
both!(rotate_keeps_old_secret_for_grace);

fn revoke_is_immediate_and_once(db: &Db) {
    let k = Keyd::start(db);
    let v = k.issue(r#"{"name":"rev"}"#);
    let id = v["id"].as_str().unwrap();
    let key = v["key"].as_str().unwrap();
    assert_eq!(
        k.verify("GET", "/api/tags", Some(&bearer(key))).status(),
        200
    );
    let (s, b) = error_field(k.admin_post(
        &format!("/v1/keys/{id}/revoke"),
        &format!(r#"{{"reason":"{}"}}"#, "r".repeat(600)),
    ));
    assert_eq!((s, b["error"]["field"].as_str()), (400, Some("reason")));
    let r = k.admin_post(
        &format!("/v1/keys/{id}/revoke"),
        r#"{"reason":"leaked in CI log"}"#,
    );
    assert_eq!(r.status(), 200);
    let body: Value = r.json().unwrap();
    assert_eq!(body, serde_json::json!({"id": id, "status": "revoked"}));
    let e = k.last_audit();
    assert_eq!(e["action"], "key.revoke");
    assert_eq!(e["key_id"], id);
    assert_eq!(e["detail"]["reason"], "leaked in CI log");
    let r = k.verify("GET", "/api/tags", Some(&bearer(key)));
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-keygate-deny"], "key_revoked");
    let shown: Value = k.admin_get(&format!("/v1/keys/{id}")).json().unwrap();
    assert_eq!(shown["status"], "revoked");
    assert_eq!(shown["revoke_reason"], "leaked in CI log");
    let n = audit_count(&k);
    let (s, b) = error_field(k.admin_post(&format!("/v1/keys/{id}/revoke"), "{}"));
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("conflict")));
    assert_eq!(audit_count(&k), n, "a refused revoke leaves no entry");
    assert_eq!(
        k.admin_post("/v1/keys/aaaaaaaaaaaa/revoke", "{}").status(),
        404
    );
}
both!(revoke_is_immediate_and_once);

fn tokens_mint_and_exchange(db: &Db) {
    let k = Keyd::start(db);
    let v = k.issue(r#"{"name":"tok","models":["qwen3*"]}"#);
    let id = v["id"].as_str().unwrap();
    let key = v["key"].as_str().unwrap();
    let r = k.admin_post(&format!("/v1/keys/{id}/tokens"), r#"{"ttl":"10m"}"#);
    assert_eq!(r.status(), 200);
    let t: Value = r.json().unwrap();
    let token = t["token"].as_str().unwrap();
    let jti = t["jti"].as_str().unwrap();
    let e = k.last_audit();
    assert_eq!(e["action"], "token.mint");
    assert_eq!(e["key_id"], id);
    assert_eq!(e["detail"]["jti"], jti);
    assert!(!serde_json::to_string(&e).unwrap().contains(token));
    // The token verifies against the published JWKS with keygate-core …
    let jwks: Value = k
        .http
        .get(k.url("/.well-known/jwks.json"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let keys: Vec<(String, keygate_core::ed25519_dalek::VerifyingKey)> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            let x = keygate_core::codec::b64url_decode(j["x"].as_str().unwrap()).unwrap();
            (
                j["kid"].as_str().unwrap().to_owned(),
                keygate_core::ed25519_dalek::VerifyingKey::from_bytes(&x.try_into().unwrap())
                    .unwrap(),
            )
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims =
        keygate_core::token::verify(token, &keys, &keygate_core::token::VerifyOptions::new(now))
            .unwrap();
    assert_eq!(claims.sub, id);
    assert_eq!(claims.jti, jti);
    assert!(claims.exp - claims.iat == 600);
    // … and through /v1/verify.
    let r = k.verify("GET", "/api/tags", Some(&bearer(token)));
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-keygate-via"], "token");

    let (s, b) = error_field(k.admin_post(&format!("/v1/keys/{id}/tokens"), r#"{"ttl":"48h"}"#));
    assert_eq!((s, b["error"]["field"].as_str()), (400, Some("ttl")));
    let (s, b) = error_field(k.admin_post(&format!("/v1/keys/{id}/tokens"), r#"{"ttl":"x"}"#));
    assert_eq!((s, b["error"]["field"].as_str()), (400, Some("ttl")));
    assert_eq!(
        k.admin_post("/v1/keys/aaaaaaaaaaaa/tokens", "{}").status(),
        404
    );

    // Exchange: the client's own key, no admin token.
    let r = k
        .http
        .post(k.url("/v1/token/exchange"))
        .bearer_auth(key)
        .body(r#"{"ttl":"5m"}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let x: Value = r.json().unwrap();
    assert!(x["token"].is_string() && x["expires_at"].is_string());
    let e = k.last_audit();
    assert_eq!(e["action"], "token.exchange");
    assert_eq!(e["actor"], "exchange");
    assert_eq!(e["key_id"], id);
    // A token, the admin token, garbage: refused.
    for cred in [token, ADMIN, "kg_garbage"] {
        let r = k
            .http
            .post(k.url("/v1/token/exchange"))
            .bearer_auth(cred)
            .send()
            .unwrap();
        assert_eq!(r.status(), 401, "{cred:.10}");
    }
    let r = k.http.post(k.url("/v1/token/exchange")).send().unwrap();
    assert_eq!(r.status(), 401);

    // Revoking the key kills its tokens and further minting.
    k.admin_post(&format!("/v1/keys/{id}/revoke"), "{}");
    assert_eq!(
        k.verify("GET", "/api/tags", Some(&bearer(token))).status(),
        401
    );
    let (s, _) = error_field(k.admin_post(&format!("/v1/keys/{id}/tokens"), "{}"));
    assert_eq!(s, 409);
    let r = k
        .http
        .post(k.url("/v1/token/exchange"))
        .bearer_auth(key)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
}
both!(tokens_mint_and_exchange);

fn signing_key_rotation_keeps_old_keys_published(db: &Db) {
    let k = Keyd::start(db);
    let v = k.issue(r#"{"name":"sig"}"#);
    let id = v["id"].as_str().unwrap();
    let t: Value = k
        .admin_post(&format!("/v1/keys/{id}/tokens"), "{}")
        .json()
        .unwrap();
    let old_token = t["token"].as_str().unwrap().to_owned();
    let (s, b) = error_field(k.admin_post("/v1/signing-keys/rotate", r#"{"which":"both"}"#));
    assert_eq!((s, b["error"]["field"].as_str()), (400, Some("which")));
    let r = k.admin_post("/v1/signing-keys/rotate", r#"{"which":"token"}"#);
    assert_eq!(r.status(), 200);
    let rot: Value = r.json().unwrap();
    assert_eq!(rot["which"], "token");
    let kid = rot["kid"].as_str().unwrap();
    let e = k.last_audit();
    assert_eq!(e["action"], "signing_key.rotate");
    assert_eq!(e["detail"]["kid"], kid);
    let jwks: Value = k
        .http
        .get(k.url("/.well-known/jwks.json"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids.len(), 2);
    assert_eq!(kids[0], kid, "current key first");
    // Tokens signed by the retired key still verify; new tokens use the new kid.
    assert_eq!(
        k.verify("GET", "/api/tags", Some(&bearer(&old_token)))
            .status(),
        200
    );
    let t2: Value = k
        .admin_post(&format!("/v1/keys/{id}/tokens"), "{}")
        .json()
        .unwrap();
    assert_eq!(
        k.verify(
            "GET",
            "/api/tags",
            Some(&bearer(t2["token"].as_str().unwrap()))
        )
        .status(),
        200
    );

    // Snapshot key rotation: the new key signs; the old one is still listed.
    let cred = k.filter_credential();
    let r = k.admin_post("/v1/signing-keys/rotate", r#"{"which":"snapshot"}"#);
    assert_eq!(r.status(), 200);
    let rot: Value = r.json().unwrap();
    let new_pub = rot["public_key"].as_str().unwrap();
    let listed: Vec<&str> = rot["snapshot_public_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![new_pub, k.snapshot_key.as_str()]);
    let bytes = k.snapshot(&cred, "").bytes().unwrap();
    let new_key = keygate_core::snapshot::parse_public_key(new_pub).unwrap();
    let p = keygate_core::snapshot::decode(&bytes, &[new_key], usize::MAX).unwrap();
    let keygate_core::snapshot::Payload::Full(s) = p else {
        panic!("full expected")
    };
    assert_eq!(
        s.signing_keys.len(),
        2,
        "both token keys travel in the snapshot"
    );
    assert!(keygate_core::snapshot::decode(&bytes, &[common::pinned(&k)], usize::MAX).is_err());
    let pubs: Value = k
        .http
        .get(k.url("/v1/snapshot-keys"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(pubs["keys"].as_array().unwrap().len(), 2);
    assert_eq!(k.audit_verify()["ok"], true);
}
both!(signing_key_rotation_keeps_old_keys_published);

/// An ssh-ed25519 key pair for a test client, signing like `OLLAMA_AUTH=1` does.
struct OllamaClient {
    key: keygate_core::ed25519_dalek::SigningKey,
}

impl OllamaClient {
    fn new(seed: u8) -> Self {
        Self {
            key: keygate_core::ed25519_dalek::SigningKey::from_bytes(&[seed; 32]),
        }
    }
    fn pub_b64(&self) -> String {
        use base64::Engine as _;
        let mut blob = vec![0, 0, 0, 11];
        blob.extend_from_slice(b"ssh-ed25519");
        blob.extend_from_slice(&[0, 0, 0, 32]);
        blob.extend_from_slice(self.key.verifying_key().as_bytes());
        base64::engine::general_purpose::STANDARD.encode(blob)
    }
    fn line(&self) -> String {
        format!("ssh-ed25519 {} test@host", self.pub_b64())
    }
    fn sign(&self, method: &str, path: &str, ts: i64) -> (String, String) {
        use base64::Engine as _;
        use keygate_core::ed25519_dalek::Signer as _;
        let msg = format!("{method},{path}?ts={ts}");
        let sig = self.key.sign(msg.as_bytes());
        (
            format!("{path}?ts={ts}"),
            format!(
                "{}:{}",
                self.pub_b64(),
                base64::engine::general_purpose::STANDARD.encode(sig.to_bytes())
            ),
        )
    }
}

fn public_keys_register_list_revoke(db: &Db) {
    let k = Keyd::start(db);
    let c = OllamaClient::new(7);
    let body = serde_json::json!({"name": "laptop", "public_key": c.line(), "routes": ["read", "inference"]});
    let r = k.admin_post("/v1/public-keys", &body.to_string());
    assert_eq!(r.status(), 201);
    let v: Value = r.json().unwrap();
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(v["kind"], "ollama_key");
    assert_eq!(
        id,
        keygate_core::ollama_sig::key_id_for(c.key.verifying_key().as_bytes())
    );
    assert!(v["public_key"]
        .as_str()
        .unwrap()
        .starts_with("ssh-ed25519 AAAAC3Nz"));
    let e = k.last_audit();
    assert_eq!(e["action"], "publickey.register");
    assert_eq!(e["key_id"], id.as_str());
    // Twice: conflict, no entry.
    let n = audit_count(&k);
    let (s, b) = error_field(k.admin_post("/v1/public-keys", &body.to_string()));
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("conflict")));
    assert_eq!(audit_count(&k), n);
    for bad in ["ssh-rsa AAAAB3NzaC1yc2E", "not a key", ""] {
        let b = serde_json::json!({"name": "x", "public_key": bad});
        let (s, e) = error_field(k.admin_post("/v1/public-keys", &b.to_string()));
        assert_eq!(
            (s, e["error"]["field"].as_str()),
            (400, Some("public_key")),
            "{bad}"
        );
    }
    let (s, e) = error_field(k.admin_post("/v1/public-keys", r#"{"name":"x"}"#));
    assert_eq!((s, e["error"]["field"].as_str()), (400, Some("public_key")));
    // Listed and shown.
    let list: Value = k.admin_get("/v1/public-keys").json().unwrap();
    assert_eq!(list["keys"].as_array().unwrap().len(), 1);
    k.issue(r#"{"name":"plain"}"#);
    let list: Value = k.admin_get("/v1/keys?kind=ollama_key").json().unwrap();
    assert_eq!(list["keys"].as_array().unwrap().len(), 1);
    let all: Value = k.admin_get("/v1/keys").json().unwrap();
    assert_eq!(all["keys"].as_array().unwrap().len(), 2);
    // A signed request verifies through /v1/verify (as nginx passes it).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (uri, auth) = c.sign("GET", "/api/tags", now);
    let r = k.verify("GET", &uri, Some(&auth));
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-keygate-key-id"], id.as_str());
    assert_eq!(r.headers()["x-keygate-via"], "signed");
    let (uri, auth) = c.sign("GET", "/api/tags", now - 3600);
    let r = k.verify("GET", &uri, Some(&auth));
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-keygate-deny"], "sig_stale");
    let stranger = OllamaClient::new(9);
    let (uri, auth) = stranger.sign("GET", "/api/tags", now);
    let r = k.verify("GET", &uri, Some(&auth));
    assert_eq!(r.headers()["x-keygate-deny"], "sig_unregistered_key");
    // Rotation has nothing to rotate; revoke works like keys.
    assert_eq!(
        k.admin_post(&format!("/v1/keys/{id}/rotate"), "{}")
            .status(),
        409
    );
    assert_eq!(
        k.admin_post(&format!("/v1/keys/{id}/revoke"), "{}")
            .status(),
        200
    );
    let (uri, auth) = c.sign("GET", "/api/tags", now);
    let r = k.verify("GET", &uri, Some(&auth));
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-keygate-deny"], "key_revoked");
}
both!(public_keys_register_list_revoke);

fn audit_filters(db: &Db) {
    let k = Keyd::start(db);
    let a = k.issue(r#"{"name":"a"}"#);
    let b = k.issue(r#"{"name":"b"}"#);
    let a_id = a["id"].as_str().unwrap();
    k.admin_post(&format!("/v1/keys/{a_id}/revoke"), "{}");
    let by_key = k.audit(&format!("?key={a_id}"));
    let actions: Vec<&str> = by_key
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, vec!["key.issue", "key.revoke"]);
    let issues = k.audit("?action=key.issue");
    assert_eq!(issues.len(), 2);
    assert_eq!(issues[1]["key_id"], b["id"]);
    // Time window: everything is after an hour ago, nothing before.
    let hour_ago = time_str(-3600);
    let in_hour = time_str(3600);
    assert_eq!(
        k.audit(&format!("?since={hour_ago}")).len(),
        audit_count(&k)
    );
    assert_eq!(k.audit(&format!("?until={hour_ago}")).len(), 0);
    assert_eq!(
        k.audit(&format!(
            "?since={hour_ago}&until={in_hour}&action=key.revoke"
        ))
        .len(),
        1
    );
    // Paging by seq.
    let all = k.audit("");
    let r: Value = k.admin_get("/v1/audit?limit=2").json().unwrap();
    assert_eq!(r["entries"].as_array().unwrap().len(), 2);
    let next = r["next"].as_i64().unwrap();
    let rest = k.audit(&format!("?after={next}"));
    assert_eq!(rest.len() + 2, all.len());
    // Entries chain.
    for w in all.windows(2) {
        assert_eq!(w[1]["prev_hash"], w[0]["hash"]);
        assert_eq!(
            w[1]["seq"].as_i64().unwrap(),
            w[0]["seq"].as_i64().unwrap() + 1
        );
    }
    for (q, field) in [
        ("?since=yesterday", "since"),
        ("?action=key.explode", "action"),
        ("?limit=5000", "limit"),
        ("?after=x", "after"),
        ("?colour=red", "colour"),
    ] {
        let (s, b) = error_field(k.admin_get(&format!("/v1/audit{q}")));
        assert_eq!((s, b["error"]["field"].as_str()), (400, Some(field)), "{q}");
    }
}
both!(audit_filters);

fn time_str(offset: i64) -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::seconds(offset);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
        .replace('+', "%2B")
}

fn health_and_metrics(db: &Db) {
    let k = Keyd::start(db);
    let h: Value = k
        .http
        .get(k.url("/healthz"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(h["status"], "ok");
    assert!(h["version"].as_u64().unwrap() >= 1);
    let a = k.issue(r#"{"name":"m"}"#);
    k.verify(
        "GET",
        "/api/tags",
        Some(&bearer(a["key"].as_str().unwrap())),
    );
    k.verify("GET", "/api/tags", None);
    let m = k
        .http
        .get(k.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for needle in [
        "keyd_http_requests_total{route=\"/v1/keys\",status=\"201\"} 1",
        "keyd_keys{status=\"active\"} 1",
        "keyd_snapshot_version ",
        "keyd_longpoll_waiters 0",
        "keyd_audit_entries 3",
        "keyd_verify_decisions_total{result=\"allow\",reason=\"ok\"} 1",
        "keyd_verify_decisions_total{result=\"deny\",reason=\"no_credential\"} 1",
    ] {
        assert!(m.contains(needle), "{needle} missing from:\n{m}");
    }
}
both!(health_and_metrics);
