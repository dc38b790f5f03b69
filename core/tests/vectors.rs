//! Replays the test vectors in `core/tests/vectors/*.json`.
//!
//! Every file is `{ "description", "context"?, "cases": [{ "name", "input", "expect" }] }`.
//! An `expect` is either `{ "reject": "<reason code>" }` (the specific `code()` of the
//! rejection) or an `ok` / `allow` / `deny` object; every assertion names the case.
//!
//! The committed files are the source of truth: keyd and filter tests replay them too.
//! The crypto-derived files (keys, tokens, snapshots, ollama_sig, decisions) were written
//! by the generator at the bottom of this file from fixed seeds; expectations there are
//! literals in the generator, never computed by the code under test. Regenerate with
//! `cargo test -p keygate-core --test vectors -- --ignored generate_vectors`.
//! The tables (routes, model names, allowlists) are written by hand.

use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use keygate_core::apikey::{ApiKey, KeyId, ParsedKey};
use keygate_core::codec::{b64url_decode, b64url_encode, hex_decode, hex_encode};
use keygate_core::model::{self, ModelCheck, ModelGlob};
use keygate_core::ollama_sig::{self, SigOptions};
use keygate_core::policy::{self, Policy, RouteSet};
use keygate_core::ratelimit::{Burst, Rate, RateSpec};
use keygate_core::routes::{self, ApiFlavor, ModelSource, RouteClass};
use keygate_core::snapshot::{
    self, KeyKind, KeyRecord, KeyStatus, MemStore, Payload, Previous, RevokedToken, SigningPub,
    Snapshot,
};
use keygate_core::token::{self, VerifyOptions};
use keygate_core::verify::{self, EngineConfig, RequestView, Via};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::PathBuf;

// ---------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------

/// Every file in the vectors directory and the test that replays it. A file nobody replays
/// fails [`every_vector_file_is_replayed`].
const FILES: &[&str] = &[
    "keys.json",
    "tokens.json",
    "snapshots.json",
    "routes.json",
    "models_normalize.json",
    "models_allow.json",
    "ollama_sig.json",
    "decisions.json",
];

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn load(file: &str) -> Value {
    let path = vectors_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: cannot read: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: not JSON: {e}"))
}

struct Case<'a> {
    name: String,
    input: &'a Value,
    expect: &'a Value,
}

impl Case<'_> {
    fn str(&self, key: &str) -> &str {
        str_of(self.input, key, &self.name)
    }
    fn opt_str(&self, key: &str) -> Option<&str> {
        match self.input.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_str()
                    .unwrap_or_else(|| panic!("{}: input.{key} is not a string", self.name)),
            ),
        }
    }
    fn i64(&self, key: &str) -> i64 {
        i64_of(self.input, key, &self.name)
    }
    fn opt_i64(&self, key: &str) -> Option<i64> {
        self.input.get(key).and_then(Value::as_i64)
    }
    /// The expected rejection code, when the case expects one.
    fn reject(&self) -> Option<&str> {
        self.expect.get("reject").map(|v| {
            v.as_str()
                .unwrap_or_else(|| panic!("{}: expect.reject is not a string", self.name))
        })
    }
}

fn cases<'a>(doc: &'a Value, file: &str) -> Vec<Case<'a>> {
    let arr = doc["cases"]
        .as_array()
        .unwrap_or_else(|| panic!("{file}: no cases array"));
    assert!(!arr.is_empty(), "{file}: empty cases array");
    let mut seen = HashSet::new();
    arr.iter()
        .map(|c| {
            let name = c["name"]
                .as_str()
                .unwrap_or_else(|| panic!("{file}: a case has no name"));
            assert!(seen.insert(name), "{file}: duplicate case name {name:?}");
            assert!(c.get("input").is_some(), "{file}: {name}: no input");
            assert!(c.get("expect").is_some(), "{file}: {name}: no expect");
            Case {
                name: format!("{file}: {name}"),
                input: &c["input"],
                expect: &c["expect"],
            }
        })
        .collect()
}

fn str_of<'a>(v: &'a Value, key: &str, ctx: &str) -> &'a str {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{ctx}: {key} missing or not a string"))
}

fn i64_of(v: &Value, key: &str, ctx: &str) -> i64 {
    v.get(key)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("{ctx}: {key} missing or not an integer"))
}

fn hex_bytes(s: &str, ctx: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "{ctx}: odd-length hex");
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_else(|_| panic!("{ctx}: bad hex at {i}"))
        })
        .collect()
}

fn hex32(s: &str, ctx: &str) -> [u8; 32] {
    hex_decode::<32>(s).unwrap_or_else(|| panic!("{ctx}: not 32 bytes of hex: {s}"))
}

// ---------------------------------------------------------------------------------------
// Records and states as JSON (shared by the generator and the replay)
// ---------------------------------------------------------------------------------------

fn record_to_json(r: &KeyRecord) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "kind": match r.kind { KeyKind::ApiKey => "api_key", KeyKind::OllamaKey => "ollama_key" },
        "digest": hex_encode(&r.digest),
        "previous": r.previous.map(|p| json!({
            "digest": hex_encode(&p.digest),
            "valid_until": p.valid_until,
        })),
        "status": match r.status { KeyStatus::Active => "active", KeyStatus::Revoked => "revoked" },
        "expires_at": r.expires_at,
        "routes": r.policy.routes.names(),
        "models": r.policy.models.iter().map(ModelGlob::as_str).collect::<Vec<_>>(),
        "rate": r.policy.rate.map(|rate| json!({
            "count": rate.spec.count(),
            "period_ms": rate.spec.period_ms(),
            "burst": rate.burst.get(),
        })),
    })
}

fn record_from_json(v: &Value, ctx: &str) -> KeyRecord {
    let id = str_of(v, "id", ctx);
    let ctx = format!("{ctx}: record {id}");
    let ctx = ctx.as_str();
    let kind = match str_of(v, "kind", ctx) {
        "api_key" => KeyKind::ApiKey,
        "ollama_key" => KeyKind::OllamaKey,
        other => panic!("{ctx}: unknown kind {other}"),
    };
    let status = match str_of(v, "status", ctx) {
        "active" => KeyStatus::Active,
        "revoked" => KeyStatus::Revoked,
        other => panic!("{ctx}: unknown status {other}"),
    };
    let previous = match &v["previous"] {
        Value::Null => None,
        p => Some(Previous {
            digest: hex32(str_of(p, "digest", ctx), ctx),
            valid_until: i64_of(p, "valid_until", ctx),
        }),
    };
    let routes: Vec<&str> = v["routes"]
        .as_array()
        .unwrap_or_else(|| panic!("{ctx}: routes"))
        .iter()
        .map(|r| r.as_str().unwrap_or_else(|| panic!("{ctx}: route")))
        .collect();
    let models: Vec<&str> = v["models"]
        .as_array()
        .unwrap_or_else(|| panic!("{ctx}: models"))
        .iter()
        .map(|r| r.as_str().unwrap_or_else(|| panic!("{ctx}: model")))
        .collect();
    let rate = match &v["rate"] {
        Value::Null => None,
        r => {
            let count = u32::try_from(i64_of(r, "count", ctx)).unwrap();
            let period = u32::try_from(i64_of(r, "period_ms", ctx)).unwrap();
            let burst = u32::try_from(i64_of(r, "burst", ctx)).unwrap();
            Some(Rate::new(
                RateSpec::try_new(count, period).unwrap_or_else(|e| panic!("{ctx}: {e}")),
                Some(Burst::try_new(burst).unwrap_or_else(|e| panic!("{ctx}: {e}"))),
            ))
        }
    };
    KeyRecord {
        id: id.to_owned(),
        name: str_of(v, "name", ctx).to_owned(),
        kind,
        digest: hex32(str_of(v, "digest", ctx), ctx),
        previous,
        status,
        expires_at: v["expires_at"].as_i64(),
        policy: Policy {
            routes: RouteSet::parse_list(&routes).unwrap_or_else(|e| panic!("{ctx}: {e}")),
            models: policy::parse_models(&models).unwrap_or_else(|e| panic!("{ctx}: {e}")),
            rate,
        },
    }
}

fn snapshot_to_json(s: &Snapshot) -> Value {
    json!({
        "version": s.version,
        "issued_at": s.issued_at,
        "signing_keys": s.signing_keys.iter().map(|k| json!({
            "kid": k.kid,
            "key": hex_encode(&k.key),
        })).collect::<Vec<_>>(),
        "keys": s.keys.iter().map(record_to_json).collect::<Vec<_>>(),
        "revoked_tokens": s.revoked_tokens.iter().map(|t| json!({
            "jti": t.jti,
            "exp": t.exp,
        })).collect::<Vec<_>>(),
    })
}

/// An Ed25519 key from an OpenSSH private key file (unencrypted, as `ssh-keygen -N ""` and
/// `ollama serve` write them). Only what the tests need: no cipher, one key.
fn parse_openssh_private_key(pem: &str) -> SigningKey {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    let blob = base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("OpenSSH key body is base64");
    let mut rest = blob
        .strip_prefix(b"openssh-key-v1\0".as_slice())
        .expect("openssh-key-v1 magic");
    fn string<'a>(rest: &mut &'a [u8]) -> &'a [u8] {
        let (len, tail) = rest.split_at(4);
        let len = u32::from_be_bytes(len.try_into().unwrap()) as usize;
        let (s, tail) = tail.split_at(len);
        *rest = tail;
        s
    }
    assert_eq!(string(&mut rest), b"none", "cipher");
    assert_eq!(string(&mut rest), b"none", "kdf");
    assert_eq!(string(&mut rest), b"", "kdf options");
    let (n, tail) = rest.split_at(4);
    assert_eq!(n, [0, 0, 0, 1], "one key");
    rest = tail;
    let public_blob = string(&mut rest).to_vec();
    let mut private = string(&mut rest);
    let (check1, tail) = private.split_at(4);
    let (check2, tail) = tail.split_at(4);
    assert_eq!(check1, check2, "check ints");
    private = tail;
    assert_eq!(string(&mut private), b"ssh-ed25519");
    let public = string(&mut private).to_vec();
    let secret = string(&mut private);
    assert_eq!(secret.len(), 64, "seed || public");
    assert_eq!(&secret[32..], public.as_slice());
    let key = SigningKey::from_bytes(&secret[..32].try_into().unwrap());
    assert_eq!(key.verifying_key().as_bytes(), public.as_slice());
    // The public blob outside the private section names the same key.
    assert_eq!(&public_blob[public_blob.len() - 32..], public.as_slice());
    key
}

/// The `<pub>` field of `Authorization` for a key: base64 of its ssh-ed25519 wire blob.
fn ssh_public_b64(key: &VerifyingKey) -> String {
    let mut blob = Vec::new();
    blob.extend_from_slice(&11u32.to_be_bytes());
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&32u32.to_be_bytes());
    blob.extend_from_slice(key.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(blob)
}

/// Signs exactly as the ollama CLI does: `METHOD,PATH?ts=N`, header `<pub>:<sig>`.
fn ollama_sign(key: &SigningKey, method: &str, path: &str, ts: i64) -> String {
    let message = format!("{method},{path}?ts={ts}");
    let sig = key.sign(message.as_bytes());
    format!(
        "{}:{}",
        ssh_public_b64(&key.verifying_key()),
        base64::engine::general_purpose::STANDARD.encode(sig.to_bytes())
    )
}

// ---------------------------------------------------------------------------------------
// Replay
// ---------------------------------------------------------------------------------------

#[test]
fn every_vector_file_is_replayed() {
    let mut on_disk: Vec<String> = std::fs::read_dir(vectors_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    on_disk.sort();
    let mut known: Vec<String> = FILES.iter().map(|s| (*s).to_owned()).collect();
    known.sort();
    assert_eq!(
        on_disk, known,
        "vector files on disk vs. files replayed here"
    );
}

#[test]
fn keys() {
    let doc = load("keys.json");
    for c in cases(&doc, "keys.json") {
        let text = c
            .input
            .as_str()
            .unwrap_or_else(|| panic!("{}: input", c.name));
        let got = ParsedKey::parse(text);
        match c.reject() {
            Some(code) => match got {
                Ok(_) => panic!("{}: accepted, expected {code}", c.name),
                Err(e) => assert_eq!(e.code(), code, "{}", c.name),
            },
            None => {
                let ok = &c.expect["ok"];
                let k = got.unwrap_or_else(|e| panic!("{}: rejected with {}", c.name, e.code()));
                assert_eq!(k.id(), str_of(ok, "id", &c.name), "{}: id", c.name);
                assert_eq!(
                    k.digest().to_hex(),
                    str_of(ok, "digest", &c.name),
                    "{}: digest",
                    c.name
                );
            }
        }
    }
}

#[test]
fn tokens() {
    let doc = load("tokens.json");
    let ctx = &doc["context"];
    let keys: Vec<(String, VerifyingKey)> = ctx["signing_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let kid = str_of(k, "kid", "tokens.json context").to_owned();
            let bytes = b64url_decode(str_of(k, "public_key", "tokens.json context")).unwrap();
            let key = VerifyingKey::from_bytes(&bytes.try_into().unwrap()).unwrap();
            (kid, key)
        })
        .collect();
    for c in cases(&doc, "tokens.json") {
        let opts = VerifyOptions {
            now: c.i64("now"),
            max_lifetime: c
                .opt_i64("max_lifetime")
                .unwrap_or_else(|| i64_of(ctx, "max_lifetime", "context")),
            leeway: i64_of(ctx, "leeway", "context"),
            issuer: c.opt_str("issuer"),
        };
        let got = token::verify(c.str("token"), &keys, &opts);
        match c.reject() {
            Some(code) => match got {
                Ok(_) => panic!("{}: accepted, expected {code}", c.name),
                Err(e) => assert_eq!(e.code(), code, "{}", c.name),
            },
            None => {
                let ok = &c.expect["ok"];
                let claims =
                    got.unwrap_or_else(|e| panic!("{}: rejected with {}", c.name, e.code()));
                assert_eq!(claims.sub, str_of(ok, "sub", &c.name), "{}: sub", c.name);
                assert_eq!(claims.jti, str_of(ok, "jti", &c.name), "{}: jti", c.name);
                assert_eq!(claims.exp, i64_of(ok, "exp", &c.name), "{}: exp", c.name);
                let scope: Vec<String> = serde_json::from_value(ok["scope"].clone()).unwrap();
                assert_eq!(claims.scope, scope, "{}: scope", c.name);
            }
        }
    }
}

#[test]
fn snapshots() {
    let doc = load("snapshots.json");
    let ctx = &doc["context"];
    let pinned_key = |name: &str, case: &str| -> VerifyingKey {
        let text = str_of(&ctx["public_keys"], name, case);
        snapshot::parse_public_key(text).unwrap_or_else(|| panic!("{case}: key {name}"))
    };
    for c in cases(&doc, "snapshots.json") {
        let pinned: Vec<VerifyingKey> = c.input["pinned"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: pinned", c.name))
            .iter()
            .map(|n| pinned_key(n.as_str().unwrap(), &c.name))
            .collect();
        let max_len = c
            .opt_i64("max_len")
            .map_or(snapshot::DEFAULT_MAX_LEN, |n| usize::try_from(n).unwrap());
        let envelopes = c.input["envelopes"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: envelopes", c.name));
        let mut store = MemStore::new();
        let mut failure = None;
        for (i, env) in envelopes.iter().enumerate() {
            let bytes = hex_bytes(env.as_str().unwrap(), &c.name);
            let step = snapshot::decode(&bytes, &pinned, max_len).and_then(|p| store.apply(p));
            if let Err(e) = step {
                failure = Some((i, e));
                break;
            }
        }
        match c.reject() {
            Some(code) => {
                let (at, e) =
                    failure.unwrap_or_else(|| panic!("{}: accepted, expected {code}", c.name));
                assert_eq!(e.code(), code, "{}", c.name);
                assert_eq!(
                    at as i64,
                    i64_of(c.expect, "at", &c.name),
                    "{}: rejected envelope index",
                    c.name
                );
            }
            None => {
                if let Some((i, e)) = failure {
                    panic!("{}: envelope {i} rejected with {}", c.name, e.code());
                }
                assert_eq!(
                    snapshot_to_json(&store.to_snapshot()),
                    c.expect["ok"],
                    "{}: resulting state",
                    c.name
                );
            }
        }
    }
}

/// A delta applied to its base yields byte-for-byte the full snapshot of the new version.
#[test]
fn snapshot_delta_equals_full_encoding() {
    let doc = load("snapshots.json");
    let ctx = &doc["context"];
    let key = snapshot::parse_public_key(str_of(&ctx["public_keys"], "snapshot", "ctx")).unwrap();
    let env = |name: &str| hex_bytes(str_of(&ctx["envelopes"], name, "ctx"), name);
    let mut store = MemStore::new();
    for name in ["full_v1", "delta_v1_v2"] {
        store
            .apply(snapshot::decode(&env(name), &[key], 1 << 20).unwrap())
            .unwrap();
    }
    let Payload::Full(full) = snapshot::decode(&env("full_v2"), &[key], 1 << 20).unwrap() else {
        panic!("full_v2 is not a full snapshot");
    };
    assert_eq!(store.to_snapshot(), full, "full v1 + delta 1→2 vs full v2");
}

fn class_name(c: RouteClass) -> &'static str {
    c.as_str()
}

#[test]
fn routes() {
    let doc = load("routes.json");
    let mut classes_seen = HashSet::new();
    for c in cases(&doc, "routes.json") {
        let r = routes::classify(c.str("method"), c.str("path"));
        let e = c.expect;
        assert_eq!(
            class_name(r.class),
            str_of(e, "class", &c.name),
            "{}: class",
            c.name
        );
        classes_seen.insert(class_name(r.class));
        let model = match r.model {
            ModelSource::None => json!(null),
            ModelSource::JsonBody => json!("body"),
            ModelSource::Multipart => json!("multipart"),
            ModelSource::Path(m) => json!({ "path": m }),
        };
        assert_eq!(model, e["model"], "{}: model source", c.name);
        let flavor = match r.flavor {
            ApiFlavor::Ollama => "ollama",
            ApiFlavor::OpenAi => "openai",
        };
        assert_eq!(flavor, str_of(e, "flavor", &c.name), "{}: flavor", c.name);
        assert_eq!(
            r.needs_body(),
            model == json!("body"),
            "{}: needs_body",
            c.name
        );
    }
    assert_eq!(classes_seen.len(), 4, "the table covers every class");
}

#[test]
fn model_names() {
    let doc = load("models_normalize.json");
    for c in cases(&doc, "models_normalize.json") {
        let name = c
            .input
            .as_str()
            .unwrap_or_else(|| panic!("{}: input", c.name));
        let got = model::normalize(name);
        assert_eq!(
            got.as_deref(),
            c.expect["normalized"].as_str(),
            "{}: normalized",
            c.name
        );
        if let Some(n) = &got {
            let cloud = c.expect["cloud"]
                .as_bool()
                .unwrap_or_else(|| panic!("{}: expect.cloud", c.name));
            assert_eq!(model::is_cloud(n), cloud, "{}: cloud", c.name);
        }
    }
}

#[test]
fn model_allowlists() {
    let doc = load("models_allow.json");
    for c in cases(&doc, "models_allow.json") {
        let patterns: Vec<&str> = c.input["allow"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: allow", c.name))
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        let globs = policy::parse_models(&patterns);
        if let Some(code) = c.reject() {
            assert_eq!(
                code, "invalid_pattern",
                "{}: only patterns are rejected",
                c.name
            );
            assert!(globs.is_err(), "{}: pattern accepted", c.name);
            continue;
        }
        let globs = globs.unwrap_or_else(|e| panic!("{}: patterns rejected: {e}", c.name));
        let got = match model::check(&globs, c.str("model")) {
            ModelCheck::Allowed => "allowed",
            ModelCheck::NotAllowed => "not_allowed",
            ModelCheck::Cloud => "cloud",
            ModelCheck::Invalid => "invalid",
        };
        assert_eq!(got, str_of(c.expect, "check", &c.name), "{}", c.name);
    }
}

fn registered_store(doc: &Value, registered: &Value, case: &str) -> MemStore {
    let mut store = MemStore::new();
    for r in registered
        .as_array()
        .unwrap_or_else(|| panic!("{case}: registered"))
    {
        let name = str_of(r, "key", case);
        let public = str_of(&doc["context"]["keys"][name], "public_key", case);
        let pk = ollama_sig::parse_authorized_key(public).unwrap();
        store.upsert(KeyRecord {
            id: ollama_sig::key_id_for(&pk),
            name: name.to_owned(),
            kind: KeyKind::OllamaKey,
            digest: pk,
            previous: None,
            status: match r.get("status").and_then(Value::as_str) {
                Some("revoked") => KeyStatus::Revoked,
                _ => KeyStatus::Active,
            },
            expires_at: None,
            policy: Policy::default(),
        });
    }
    store
}

#[test]
fn ollama_signed_requests() {
    let doc = load("ollama_sig.json");
    for c in cases(&doc, "ollama_sig.json") {
        let opts = SigOptions {
            window_secs: c
                .opt_i64("window_secs")
                .unwrap_or(ollama_sig::DEFAULT_WINDOW_SECS),
            mount_prefix: c.opt_str("mount_prefix").unwrap_or("").to_owned(),
        };
        let cfg = EngineConfig {
            sig: opts.clone(),
            ..EngineConfig::default()
        };
        let store = registered_store(&doc, &c.input["registered"], &c.name);
        let auth = c.str("authorization");
        let (method, path, now) = (c.str("method"), c.str("path"), c.i64("now"));
        let cred = verify::extract_credential(Some(auth), None);
        let got = verify::authenticate(&cred, method, path, &store, now, &cfg);
        let direct = ollama_sig::verify(auth, method, path, now, &opts);
        match c.reject() {
            Some(code) => {
                let e = got
                    .err()
                    .unwrap_or_else(|| panic!("{}: accepted, expected {code}", c.name));
                assert_eq!(e.code(), code, "{}: through authenticate", c.name);
                if code.starts_with("sig_") && code != "sig_unregistered_key" {
                    let e = direct
                        .err()
                        .unwrap_or_else(|| panic!("{}: verify accepted", c.name));
                    assert_eq!(e.code(), code, "{}: through ollama_sig::verify", c.name);
                }
            }
            None => {
                let ok = &c.expect["ok"];
                let p = got.unwrap_or_else(|e| panic!("{}: rejected with {}", c.name, e.code()));
                assert_eq!(p.via, Via::Signed, "{}", c.name);
                assert_eq!(
                    p.key_id,
                    str_of(ok, "key_id", &c.name),
                    "{}: key id",
                    c.name
                );
                let v = direct.unwrap_or_else(|e| panic!("{}: verify: {}", c.name, e.code()));
                assert_eq!(v.ts, i64_of(ok, "ts", &c.name), "{}: ts", c.name);
                assert_eq!(
                    hex_encode(&v.public_key),
                    str_of(ok, "public_key_hex", &c.name),
                    "{}: public key",
                    c.name
                );
                assert_eq!(
                    ollama_sig::strip_ts(path),
                    str_of(ok, "forwarded_path", &c.name),
                    "{}: forwarded path",
                    c.name
                );
            }
        }
    }
}

/// The two vectors from issue 10: the public keys derived from the OpenSSH private keys are
/// the ones in the headers, and signing the documented string reproduces the header
/// byte for byte (Ed25519 is deterministic), so the test signer below matches the CLI.
#[test]
fn ollama_issue_vectors_resign() {
    let doc = load("ollama_sig.json");
    let keys = doc["context"]["keys"].as_object().unwrap();
    let vectors = doc["context"]["issue_vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 2);
    for v in vectors {
        let name = str_of(v, "key", "issue vector");
        let key = parse_openssh_private_key(str_of(&keys[name], "private_key", name));
        let public = str_of(&keys[name], "public_key", name);
        assert_eq!(
            format!("ssh-ed25519 {}", ssh_public_b64(&key.verifying_key())),
            public,
            "{name}: public key"
        );
        let (method, path, ts) = (
            str_of(v, "method", name),
            str_of(v, "path", name),
            i64_of(v, "ts", name),
        );
        assert_eq!(
            format!("{method},{path}?ts={ts}"),
            str_of(v, "signed_string", name),
            "{name}: signed string"
        );
        assert_eq!(
            ollama_sign(&key, method, path, ts),
            str_of(v, "authorization", name),
            "{name}: header"
        );
        let pk = ollama_sig::parse_authorized_key(public).unwrap();
        assert_eq!(
            ollama_sig::key_id_for(&pk),
            str_of(v, "key_id", name),
            "{name}: key id"
        );
    }
}

#[test]
fn decisions() {
    let doc = load("decisions.json");
    let ctx = &doc["context"];
    let mut store = MemStore::new();
    for r in ctx["keys"].as_array().unwrap() {
        store.upsert(record_from_json(r, "decisions.json context"));
    }
    let signing: Vec<SigningPub> = ctx["signing_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| SigningPub {
            kid: str_of(k, "kid", "context").to_owned(),
            key: b64url_decode(str_of(k, "public_key", "context"))
                .unwrap()
                .try_into()
                .unwrap(),
        })
        .collect();
    store.set_signing_keys(signing).unwrap();
    for t in ctx["revoked_tokens"].as_array().unwrap() {
        store.revoke_token(
            str_of(t, "jti", "context").to_owned(),
            i64_of(t, "exp", "context"),
        );
    }
    let engine = &ctx["engine"];
    let cfg = EngineConfig {
        token_max_lifetime: i64_of(engine, "token_max_lifetime", "engine"),
        token_leeway: i64_of(engine, "token_leeway", "engine"),
        token_issuer: None,
        sig: SigOptions {
            window_secs: i64_of(engine, "sig_window_secs", "engine"),
            mount_prefix: String::new(),
        },
    };
    for c in cases(&doc, "decisions.json") {
        let req = RequestView {
            method: c.str("method"),
            path: c.str("path"),
            authorization: c.opt_str("authorization"),
            x_api_key: c.opt_str("x_api_key"),
            content_encoding: c.opt_str("content_encoding"),
            body: c.opt_str("body").map(str::as_bytes),
        };
        let mut cfg = cfg.clone();
        if let Some(prefix) = c.opt_str("mount_prefix") {
            cfg.sig.mount_prefix = prefix.to_owned();
        }
        let got = verify::decide(&req, &store, c.i64("now"), &cfg);
        if let Some(deny) = c.expect.get("deny") {
            let code = deny.as_str().unwrap();
            let e = got
                .err()
                .unwrap_or_else(|| panic!("{}: allowed, expected {code}", c.name));
            assert_eq!(e.code(), code, "{}", c.name);
            assert_eq!(
                i64::from(e.status()),
                i64_of(c.expect, "status", &c.name),
                "{}: status",
                c.name
            );
        } else {
            let allow = &c.expect["allow"];
            let p = got.unwrap_or_else(|e| panic!("{}: denied with {}", c.name, e.code()));
            assert_eq!(
                p.key_id,
                str_of(allow, "key_id", &c.name),
                "{}: key id",
                c.name
            );
            let via = match p.via {
                Via::ApiKey => "api_key",
                Via::Token => "token",
                Via::Signed => "signed",
            };
            assert_eq!(via, str_of(allow, "via", &c.name), "{}: via", c.name);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Generator
// ---------------------------------------------------------------------------------------

/// Fixed "now" of the generated vectors: 2025-01-01T00:00:00Z (the ts of issue 10's first
/// vector).
const NOW: i64 = 1_735_689_600;
const TOKEN_SEED: [u8; 32] = [0x11; 32];
const OTHER_TOKEN_SEED: [u8; 32] = [0x12; 32];
const SNAPSHOT_SEED: [u8; 32] = [0x22; 32];
const OTHER_SNAPSHOT_SEED: [u8; 32] = [0x33; 32];

const OLLAMA_KEY_1: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtz
c2gtZWQyNTUxOQAAACASyR4EcM31/sf/ROOT5qFmo3JiWbM/w2manJhvP4oDDAAA
AIgAXn6gAF5+oAAAAAtzc2gtZWQyNTUxOQAAACASyR4EcM31/sf/ROOT5qFmo3Ji
WbM/w2manJhvP4oDDAAAAEA7N2n3iSAY27mB7oeFUtFXqOnEhD34sxU25wP/Zbah
nRLJHgRwzfX+x/9E45PmoWajcmJZsz/DaZqcmG8/igMMAAAAAAECAwQF
-----END OPENSSH PRIVATE KEY-----
";
const OLLAMA_HEADER_1: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIBLJHgRwzfX+x/9E45PmoWajcmJZsz/DaZqcmG8/igMM:9W5SX6dNr9hbxErghSJeKlV+mMK/nSdyVwfx3rhkV7PhtuLs61SdIUpyBD6wnDXvbCVsKgEywvbZPN5LKofBAg==";
const OLLAMA_KEY_2: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtz
c2gtZWQyNTUxOQAAACB3RAov4CHW+/crVjO5QtS5dn8U8YTn7mlM1eH6DC9gTAAA
AIh/R/2bf0f9mwAAAAtzc2gtZWQyNTUxOQAAACB3RAov4CHW+/crVjO5QtS5dn8U
8YTn7mlM1eH6DC9gTAAAAEBh0dA+yXjDwMdv4WAAS5his3nDwIgkSwDuYdBgkjkE
TXdECi/gIdb79ytWM7lC1Ll2fxTxhOfuaUzV4foML2BMAAAAAAECAwQF
-----END OPENSSH PRIVATE KEY-----
";
const OLLAMA_HEADER_2: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIHdECi/gIdb79ytWM7lC1Ll2fxTxhOfuaUzV4foML2BM:ZVPcZqDA2r6Gpg2AosQVFLb0GpEN7VKCAQlOBlv0g56D3WcWosP60cojSPDvzV5tKRDSJl+ig97s0O7gCfPlBg==";

/// Renders a vector file with `name`, `input`, `expect` in that order (serde_json's map
/// sorts keys, which would put the name last).
fn render(description: &str, context: Option<Value>, cases: &[(String, Value, Value)]) -> String {
    fn indent(v: &Value, by: &str) -> String {
        serde_json::to_string_pretty(v)
            .unwrap()
            .replace('\n', &format!("\n{by}"))
    }
    let mut out = String::from("{\n");
    out.push_str(&format!(
        "  \"description\": {},\n",
        serde_json::to_string(description).unwrap()
    ));
    if let Some(ctx) = context {
        out.push_str(&format!("  \"context\": {},\n", indent(&ctx, "  ")));
    }
    out.push_str("  \"cases\": [\n");
    for (i, (name, input, expect)) in cases.iter().enumerate() {
        out.push_str(&format!(
            "    {{\n      \"name\": {},\n      \"input\": {},\n      \"expect\": {}\n    }}{}\n",
            serde_json::to_string(name).unwrap(),
            indent(input, "      "),
            indent(expect, "      "),
            if i + 1 == cases.len() { "" } else { "," }
        ));
    }
    out.push_str("  ]\n}\n");
    // The renderer must produce valid JSON that parses back to the same cases.
    let back: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(back["cases"].as_array().unwrap().len(), cases.len());
    out
}

fn write(file: &str, text: &str) {
    std::fs::write(vectors_dir().join(file), text).unwrap();
}

fn reject(code: &str) -> Value {
    json!({ "reject": code })
}

fn key(id: &str, seed: u8) -> ApiKey {
    ApiKey::generate(&KeyId::parse(id).unwrap(), [seed; 32])
}

/// Replaces the byte at `i` of `s` (ASCII positions only).
fn with_char(s: &str, i: usize, c: char) -> String {
    let mut out = String::with_capacity(s.len());
    out.push_str(&s[..i]);
    out.push(c);
    out.push_str(&s[i + 1..]);
    out
}

fn gen_keys() -> String {
    let k = key("gen4r7keyaaa", 7);
    let text = k.expose_secret().to_owned();
    let k2 = ApiKey::generate(&KeyId::from_random([1, 2, 3, 4, 5, 6, 7, 8]), [0xab; 32]);
    let ok = |k: &ApiKey| json!({ "ok": { "id": k.id().as_str(), "digest": k.digest().to_hex() } });
    let last = text.len() - 1;
    let flip_last = with_char(&text, last, if text.ends_with('a') { 'b' } else { 'a' });
    let secret_at = 3 + 12 + 1 + 10;
    let flip_secret = with_char(
        &text,
        secret_at,
        if &text[secret_at..=secret_at] == "q" {
            'r'
        } else {
            'q'
        },
    );
    let id_at = 3 + 2;
    let flip_id = with_char(
        &text,
        id_at,
        if &text[id_at..=id_at] == "z" {
            'y'
        } else {
            'z'
        },
    );
    let cases = vec![
        (
            "valid: fixed id, secret 0x07 x32".into(),
            json!(text),
            ok(&k),
        ),
        (
            "valid: id from random bytes 1..8, secret 0xab x32".into(),
            json!(k2.expose_secret()),
            ok(&k2),
        ),
        (
            "wrong prefix: sk_".into(),
            json!(format!("sk_{}", &text[3..])),
            reject("key_wrong_prefix"),
        ),
        (
            "wrong prefix: uppercase KG_".into(),
            json!(format!("KG_{}", &text[3..])),
            reject("key_wrong_prefix"),
        ),
        (
            "wrong prefix: empty".into(),
            json!(""),
            reject("key_wrong_prefix"),
        ),
        (
            "wrong prefix: leading space".into(),
            json!(format!(" {text}")),
            reject("key_wrong_prefix"),
        ),
        (
            "wrong prefix: OpenAI-style key".into(),
            json!("sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"),
            reject("key_wrong_prefix"),
        ),
        (
            "bad length: prefix only".into(),
            json!("kg_"),
            reject("key_bad_length"),
        ),
        (
            "bad length: one char short".into(),
            json!(&text[..last]),
            reject("key_bad_length"),
        ),
        (
            "bad length: one char long".into(),
            json!(format!("{text}a")),
            reject("key_bad_length"),
        ),
        (
            "bad length: trailing newline".into(),
            json!(format!("{text}\n")),
            reject("key_bad_length"),
        ),
        (
            "bad alphabet: uppercase in secret".into(),
            json!(with_char(&text, secret_at, 'Q')),
            reject("key_bad_alphabet"),
        ),
        (
            "bad alphabet: digit 0 in secret".into(),
            json!(with_char(&text, secret_at, '0')),
            reject("key_bad_alphabet"),
        ),
        (
            "bad alphabet: digit 1 in id".into(),
            json!(with_char(&text, id_at, '1')),
            reject("key_bad_alphabet"),
        ),
        (
            "bad alphabet: digit 8 in checksum".into(),
            json!(with_char(&text, last, '8')),
            reject("key_bad_alphabet"),
        ),
        (
            "bad alphabet: separator is a dash".into(),
            json!(with_char(&text, 15, '-')),
            reject("key_bad_alphabet"),
        ),
        (
            "bad alphabet: base64url character".into(),
            json!(with_char(&text, secret_at, '_')),
            reject("key_bad_alphabet"),
        ),
        (
            "bad alphabet: two-byte UTF-8 character (same byte length)".into(),
            json!(format!("{}é{}", &text[..secret_at], &text[secret_at + 2..])),
            reject("key_bad_alphabet"),
        ),
        (
            "bad checksum: last checksum character changed".into(),
            json!(flip_last),
            reject("key_bad_checksum"),
        ),
        (
            "bad checksum: one secret character changed".into(),
            json!(flip_secret),
            reject("key_bad_checksum"),
        ),
        (
            "bad checksum: one id character changed".into(),
            json!(flip_id),
            reject("key_bad_checksum"),
        ),
        (
            "bad checksum: checksum of another key".into(),
            json!(format!(
                "{}{}",
                &text[..text.len() - 6],
                &k2.expose_secret()[k2.expose_secret().len() - 6..]
            )),
            reject("key_bad_checksum"),
        ),
    ];
    render(
        "API key texts. ok: the parsed key id and the SHA-256 digest keyd stores. reject: KeyReject::code(). Checks run in order prefix, length, alphabet, checksum.",
        None,
        &cases,
    )
}

fn jws(key: &SigningKey, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64url_encode(&serde_json::to_vec(header).unwrap()),
        b64url_encode(&serde_json::to_vec(claims).unwrap())
    );
    sign_input(key, &input)
}

fn sign_input(key: &SigningKey, input: &str) -> String {
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", b64url_encode(&sig.to_bytes()))
}

fn hs256(secret: &[u8], header: &Value, claims: &Value) -> String {
    use hmac::{Hmac, Mac};
    let input = format!(
        "{}.{}",
        b64url_encode(&serde_json::to_vec(header).unwrap()),
        b64url_encode(&serde_json::to_vec(claims).unwrap())
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", b64url_encode(&mac.finalize().into_bytes()))
}

/// `S + L` for an Ed25519 signature: the same signature in a non-canonical encoding.
fn malleate(sig: &[u8; 64]) -> [u8; 64] {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut out = *sig;
    let mut carry = 0u16;
    for i in 0..32 {
        let v = u16::from(sig[32 + i]) + u16::from(L[i]) + carry;
        out[32 + i] = v as u8;
        carry = v >> 8;
    }
    assert_eq!(carry, 0);
    out
}

fn gen_tokens() -> String {
    let signer = token::TokenSigner::from_seed("k1", TOKEN_SEED);
    let sk = SigningKey::from_bytes(&TOKEN_SEED);
    let other = SigningKey::from_bytes(&OTHER_TOKEN_SEED);
    let public = signer.verifying_key();
    let header = json!({ "alg": "EdDSA", "typ": "JWT", "kid": "k1" });
    let claims = |iat: i64, exp: i64| {
        json!({
            "iss": "keyd", "sub": "alicexxxxxxx", "iat": iat, "exp": exp,
            "jti": "tok-1", "scope": ["inference", "read"],
        })
    };
    let base = claims(NOW - 60, NOW + 840);
    let ok = json!({ "ok": { "sub": "alicexxxxxxx", "jti": "tok-1", "exp": NOW + 840, "scope": ["inference", "read"] } });
    let minted = signer.mint(&token::Claims {
        iss: "keyd".into(),
        sub: "alicexxxxxxx".into(),
        iat: NOW - 60,
        exp: NOW + 840,
        nbf: None,
        jti: "tok-1".into(),
        scope: vec!["inference".into(), "read".into()],
        models: vec![],
    });
    let valid = jws(&sk, &header, &base);
    let parts: Vec<&str> = valid.split('.').collect();
    let tampered_claims = {
        let mut c = base.clone();
        c["sub"] = json!("adminxxxxxxx");
        b64url_encode(&serde_json::to_vec(&c).unwrap())
    };
    let sig_bytes: [u8; 64] = b64url_decode(parts[2]).unwrap().try_into().unwrap();
    let none_header = json!({ "alg": "none", "typ": "JWT", "kid": "k1" });
    let none_prefix = format!(
        "{}.{}",
        b64url_encode(&serde_json::to_vec(&none_header).unwrap()),
        parts[1]
    );
    let long_claims = {
        let mut c = base.clone();
        c["pad"] = json!("x".repeat(3200));
        c
    };
    let too_long = jws(&sk, &header, &long_claims);
    assert!(too_long.len() > token::MAX_TOKEN_LEN);
    let tok = |t: &str| json!({ "token": t, "now": NOW });
    let tok_at = |t: &str, now: i64| json!({ "token": t, "now": now });
    let cases: Vec<(String, Value, Value)> = vec![
        (
            "valid: minted by TokenSigner".into(),
            tok(&minted),
            ok.clone(),
        ),
        (
            "valid: same claims signed directly".into(),
            tok(&valid),
            ok.clone(),
        ),
        (
            "valid: last second inside leeway".into(),
            tok_at(&valid, NOW + 840 + 29),
            ok.clone(),
        ),
        (
            "valid: matching issuer".into(),
            json!({ "token": valid, "now": NOW, "issuer": "keyd" }),
            ok.clone(),
        ),
        (
            "alg none with empty signature".into(),
            tok(&format!("{none_prefix}.")),
            reject("token_alg_not_allowed"),
        ),
        (
            "alg none carrying a valid EdDSA signature".into(),
            tok(&format!("{none_prefix}.{}", parts[2])),
            reject("token_alg_not_allowed"),
        ),
        (
            "alg NONE in upper case".into(),
            tok(&jws(&sk, &json!({ "alg": "NONE", "kid": "k1" }), &base)),
            reject("token_alg_not_allowed"),
        ),
        (
            "alg eddsa in lower case".into(),
            tok(&jws(&sk, &json!({ "alg": "eddsa", "kid": "k1" }), &base)),
            reject("token_alg_not_allowed"),
        ),
        (
            "alg Ed25519 (not the JOSE name)".into(),
            tok(&jws(&sk, &json!({ "alg": "Ed25519", "kid": "k1" }), &base)),
            reject("token_alg_not_allowed"),
        ),
        (
            "HS256 with the raw public key bytes as HMAC secret".into(),
            tok(&hs256(
                public.as_bytes(),
                &json!({ "alg": "HS256", "typ": "JWT", "kid": "k1" }),
                &base,
            )),
            reject("token_alg_not_allowed"),
        ),
        (
            "HS256 with the JWK x text of the public key as HMAC secret".into(),
            tok(&hs256(
                b64url_encode(public.as_bytes()).as_bytes(),
                &json!({ "alg": "HS256", "typ": "JWT", "kid": "k1" }),
                &base,
            )),
            reject("token_alg_not_allowed"),
        ),
        (
            "RS256 header with the EdDSA signature".into(),
            tok(&jws(
                &sk,
                &json!({ "alg": "RS256", "typ": "JWT", "kid": "k1" }),
                &base,
            )),
            reject("token_alg_not_allowed"),
        ),
        (
            "alg is not a string".into(),
            tok(&jws(&sk, &json!({ "alg": ["EdDSA"], "kid": "k1" }), &base)),
            reject("token_bad_header"),
        ),
        (
            "header is a JSON array with alg and kid, validly signed".into(),
            tok(&sign_input(
                &sk,
                &format!("{}.{}", b64url_encode(br#"["EdDSA","JWT","k1"]"#), parts[1]),
            )),
            reject("token_bad_header"),
        ),
        (
            "duplicate alg in the header".into(),
            tok(&sign_input(
                &sk,
                &format!(
                    "{}.{}",
                    b64url_encode(br#"{"alg":"none","alg":"EdDSA","kid":"k1"}"#),
                    parts[1]
                ),
            )),
            reject("token_bad_header"),
        ),
        (
            "crit header".into(),
            tok(&jws(
                &sk,
                &json!({ "alg": "EdDSA", "kid": "k1", "crit": ["exp"] }),
                &base,
            )),
            reject("token_crit_not_supported"),
        ),
        (
            "no kid".into(),
            tok(&jws(&sk, &json!({ "alg": "EdDSA", "typ": "JWT" }), &base)),
            reject("token_missing_kid"),
        ),
        (
            "unknown kid, signed by another key".into(),
            tok(&jws(
                &other,
                &json!({ "alg": "EdDSA", "typ": "JWT", "kid": "k9" }),
                &base,
            )),
            reject("token_unknown_kid"),
        ),
        (
            "known kid, signed by another key".into(),
            tok(&jws(&other, &header, &base)),
            reject("token_bad_signature"),
        ),
        (
            "tampered payload: sub changed, signature kept".into(),
            tok(&format!("{}.{}.{}", parts[0], tampered_claims, parts[2])),
            reject("token_bad_signature"),
        ),
        (
            "tampered header: typ changed, signature kept".into(),
            tok(&format!(
                "{}.{}.{}",
                b64url_encode(br#"{"alg":"EdDSA","typ":"jwt","kid":"k1"}"#),
                parts[1],
                parts[2]
            )),
            reject("token_bad_signature"),
        ),
        (
            "signature with one bit flipped".into(),
            tok(&{
                let mut s = sig_bytes;
                s[5] ^= 1;
                format!("{}.{}.{}", parts[0], parts[1], b64url_encode(&s))
            }),
            reject("token_bad_signature"),
        ),
        (
            "non-canonical signature (S + L)".into(),
            tok(&format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                b64url_encode(&malleate(&sig_bytes))
            )),
            reject("token_bad_signature"),
        ),
        (
            "signature of 63 bytes".into(),
            tok(&format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                b64url_encode(&sig_bytes[..63])
            )),
            reject("token_bad_signature"),
        ),
        (
            "expired: exp + leeway reached".into(),
            tok_at(&valid, NOW + 840 + 30),
            reject("token_expired"),
        ),
        (
            "expired long ago".into(),
            tok(&jws(&sk, &header, &claims(NOW - 7200, NOW - 3600))),
            reject("token_expired"),
        ),
        (
            "not yet valid: nbf ten minutes ahead".into(),
            tok(&jws(&sk, &header, &{
                let mut c = base.clone();
                c["nbf"] = json!(NOW + 600);
                c
            })),
            reject("token_not_yet_valid"),
        ),
        (
            "not yet valid: iat two minutes ahead".into(),
            tok(&jws(&sk, &header, &claims(NOW + 120, NOW + 900))),
            reject("token_not_yet_valid"),
        ),
        (
            "lifetime over the 24 h maximum".into(),
            tok(&jws(&sk, &header, &claims(NOW, NOW + 86_401))),
            reject("token_lifetime_too_long"),
        ),
        (
            "lifetime over a configured 600 s maximum".into(),
            json!({ "token": valid, "now": NOW, "max_lifetime": 600 }),
            reject("token_lifetime_too_long"),
        ),
        (
            "exp before iat".into(),
            tok(&jws(&sk, &header, &claims(NOW, NOW - 1))),
            reject("token_lifetime_too_long"),
        ),
        (
            "wrong issuer".into(),
            json!({ "token": valid, "now": NOW, "issuer": "someone-else" }),
            reject("token_wrong_issuer"),
        ),
        (
            "bad base64: header has a character outside base64url".into(),
            tok(&format!("{}*.{}.{}", parts[0], parts[1], parts[2])),
            reject("token_bad_base64"),
        ),
        (
            "bad base64: padded header".into(),
            tok(&format!("{}=.{}.{}", parts[0], parts[1], parts[2])),
            reject("token_bad_base64"),
        ),
        (
            "bad base64: signature uses the standard alphabet".into(),
            tok(&format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                parts[2].replace('-', "+").replace('_', "/") + "+"
            )),
            reject("token_bad_base64"),
        ),
        (
            "bad base64: signed payload segment is not base64url".into(),
            tok(&sign_input(&sk, &format!("{}.{}", parts[0], "e30+"))),
            reject("token_bad_base64"),
        ),
        (
            "bad JSON: header".into(),
            tok(&format!(
                "{}.{}.{}",
                b64url_encode(b"{\"alg\":\"EdDSA\","),
                parts[1],
                parts[2]
            )),
            reject("token_bad_header"),
        ),
        (
            "bad JSON: header is an array".into(),
            tok(&format!(
                "{}.{}.{}",
                b64url_encode(b"[\"EdDSA\"]"),
                parts[1],
                parts[2]
            )),
            reject("token_bad_header"),
        ),
        (
            "bad JSON: signed claims".into(),
            tok(&sign_input(
                &sk,
                &format!("{}.{}", parts[0], b64url_encode(b"{\"sub\":")),
            )),
            reject("token_bad_claims"),
        ),
        (
            "bad JSON: signed claims without exp".into(),
            tok(&jws(
                &sk,
                &header,
                &json!({ "iss": "keyd", "sub": "alicexxxxxxx", "iat": NOW, "jti": "j" }),
            )),
            reject("token_bad_claims"),
        ),
        (
            "bad JSON: claims are a JSON array, validly signed".into(),
            tok(&sign_input(
                &sk,
                &format!(
                    "{}.{}",
                    parts[0],
                    b64url_encode(
                        format!(
                            r#"["keyd","alicexxxxxxx",{},{},null,"tok-1",["inference"]]"#,
                            NOW - 60,
                            NOW + 840
                        )
                        .as_bytes()
                    )
                ),
            )),
            reject("token_bad_claims"),
        ),
        (
            "bad JSON: exp is a string".into(),
            tok(&jws(&sk, &header, &{
                let mut c = base.clone();
                c["exp"] = json!("tomorrow");
                c
            })),
            reject("token_bad_claims"),
        ),
        (
            "too long: 4097+ characters, validly signed".into(),
            tok(&too_long),
            reject("token_too_long"),
        ),
        (
            "malformed: two segments".into(),
            tok(&format!("{}.{}", parts[0], parts[1])),
            reject("token_malformed"),
        ),
        (
            "malformed: four segments".into(),
            tok(&format!("{valid}.x")),
            reject("token_malformed"),
        ),
        (
            "malformed: empty payload segment".into(),
            tok(&format!("{}..{}", parts[0], parts[2])),
            reject("token_malformed"),
        ),
        (
            "malformed: empty".into(),
            tok(""),
            reject("token_malformed"),
        ),
    ];
    let ctx = json!({
        "now": NOW,
        "max_lifetime": 86_400,
        "leeway": 30,
        "signing_keys": [{ "kid": "k1", "public_key": b64url_encode(public.as_bytes()) }],
        "seeds": { "k1": hex_encode(&TOKEN_SEED), "other": hex_encode(&OTHER_TOKEN_SEED) },
    });
    render(
        "Compact JWS tokens verified with token::verify against context.signing_keys (kid -> base64url Ed25519 public key). input.now is the verifier's clock; input.max_lifetime/issuer override the context. reject: TokenReject::code(). Test-only seeds.",
        Some(ctx),
        &cases,
    )
}

fn policy(routes: &[&str], models: &[&str], rate: Option<(&str, u32)>) -> Policy {
    Policy {
        routes: RouteSet::parse_list(routes).unwrap(),
        models: policy::parse_models(models).unwrap(),
        rate: rate.map(|(spec, burst)| {
            Rate::new(
                RateSpec::parse(spec).unwrap(),
                Some(Burst::try_new(burst).unwrap()),
            )
        }),
    }
}

fn api_record(
    name: &str,
    k: &ApiKey,
    status: KeyStatus,
    expires_at: Option<i64>,
    policy: Policy,
) -> KeyRecord {
    KeyRecord {
        id: k.id().as_str().to_owned(),
        name: name.to_owned(),
        kind: KeyKind::ApiKey,
        digest: k.digest().0,
        previous: None,
        status,
        expires_at,
        policy,
    }
}

/// An envelope assembled by hand, for inputs keyd would never sign (forged fingerprints,
/// malformed payloads).
fn raw_envelope(seed: [u8; 32], signer_fp: [u8; 8], kind: u8, payload: &[u8]) -> Vec<u8> {
    let key = SigningKey::from_bytes(&seed);
    let mut b = b"KGSN".to_vec();
    b.push(1);
    b.push(kind);
    b.extend_from_slice(&signer_fp);
    b.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    b.extend_from_slice(payload);
    let sig = key.sign(&b);
    b.extend_from_slice(&sig.to_bytes());
    b
}

fn gen_snapshots() -> String {
    let signer = snapshot::SnapshotSigner::from_seed(SNAPSHOT_SEED);
    let other = snapshot::SnapshotSigner::from_seed(OTHER_SNAPSHOT_SEED);
    let tok = token::TokenSigner::from_seed("k1", TOKEN_SEED);
    let tok2 = token::TokenSigner::from_seed("k2", OTHER_TOKEN_SEED);
    let pk1 = ollama_sig::parse_authorized_key(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBLJHgRwzfX+x/9E45PmoWajcmJZsz/DaZqcmG8/igMM",
    )
    .unwrap();
    let a = key("alicexxxxxxx", 1);
    let a2 = key("alicexxxxxxx", 2);
    let b = key("bobxxxxxxxxx", 3);
    let c = key("carolxxxxxxx", 4);
    let d = key("davexxxxxxxx", 5);
    let ollama = KeyRecord {
        id: ollama_sig::key_id_for(&pk1),
        name: "laptop".into(),
        kind: KeyKind::OllamaKey,
        digest: pk1,
        previous: None,
        status: KeyStatus::Active,
        expires_at: None,
        policy: Policy::default(),
    };
    let mut v1 = Snapshot {
        version: 1,
        issued_at: NOW,
        signing_keys: vec![SigningPub {
            kid: "k1".into(),
            key: tok.verifying_key().to_bytes(),
        }],
        keys: vec![
            api_record("alice", &a, KeyStatus::Active, None, Policy::default()),
            api_record(
                "bob",
                &b,
                KeyStatus::Active,
                Some(NOW + 86_400),
                policy(&["inference"], &["llama3*", "qwen3:8b"], Some(("10/s", 20))),
            ),
            api_record(
                "carol",
                &c,
                KeyStatus::Revoked,
                None,
                policy(&["read", "admin"], &[], None),
            ),
            ollama.clone(),
        ],
        revoked_tokens: vec![
            RevokedToken {
                jti: "tok-old".into(),
                exp: NOW + 600,
            },
            RevokedToken {
                jti: "tok-kept".into(),
                exp: NOW + 900,
            },
        ],
    };
    v1.canonicalize();
    // v2: alice rotated (old secret valid for an hour), bob removed, carol unchanged,
    // dave added, the laptop revoked, a second token key, token revocations changed.
    let mut alice2 = api_record("alice", &a2, KeyStatus::Active, None, Policy::default());
    alice2.previous = Some(Previous {
        digest: a.digest().0,
        valid_until: NOW + 3600,
    });
    let mut laptop2 = ollama;
    laptop2.status = KeyStatus::Revoked;
    let mut v2 = Snapshot {
        version: 2,
        issued_at: NOW + 5,
        signing_keys: vec![
            SigningPub {
                kid: "k1".into(),
                key: tok.verifying_key().to_bytes(),
            },
            SigningPub {
                kid: "k2".into(),
                key: tok2.verifying_key().to_bytes(),
            },
        ],
        keys: vec![
            alice2,
            v1.keys.iter().find(|k| k.name == "carol").unwrap().clone(),
            api_record(
                "dave",
                &d,
                KeyStatus::Active,
                None,
                policy(&["inference", "read", "admin"], &["*"], Some(("600/m", 5))),
            ),
            laptop2,
        ],
        revoked_tokens: vec![
            RevokedToken {
                jti: "tok-kept".into(),
                exp: NOW + 900,
            },
            RevokedToken {
                jti: "tok-new".into(),
                exp: NOW + 1200,
            },
        ],
    };
    v2.canonicalize();
    let delta = v1.diff(&v2);
    let full1 = signer.sign_full(&v1);
    let full2 = signer.sign_full(&v2);
    let delta12 = signer.sign_delta(&delta);
    let full1_other = other.sign_full(&v1);
    let hex = |b: &[u8]| hex_encode(b);
    let state1 = snapshot_to_json(&v1);
    let state2 = snapshot_to_json(&v2);
    let fp = snapshot::fingerprint(&signer.verifying_key());
    let payload1 = &full1[18..full1.len() - 64];
    let flip = |bytes: &[u8], i: usize| {
        let mut b = bytes.to_vec();
        b[i] ^= 0x01;
        b
    };
    // A 32-byte string that is not a valid Ed25519 point, for a snapshot carrying a token
    // key that cannot be used.
    let bad_point = (0u8..=255)
        .map(|i| [i; 32])
        .find(|b| VerifyingKey::from_bytes(b).is_err())
        .unwrap();
    let mut v3_bad = v2.clone();
    v3_bad.version = 3;
    v3_bad.signing_keys.push(SigningPub {
        kid: "bad".into(),
        key: bad_point,
    });
    let set_len = |bytes: &[u8], by: i64| {
        let mut b = bytes.to_vec();
        let len = u32::from_be_bytes(b[14..18].try_into().unwrap());
        let len = u32::try_from(i64::from(len) + by).unwrap();
        b[14..18].copy_from_slice(&len.to_be_bytes());
        b
    };
    let one = |env: &[u8]| json!({ "pinned": ["snapshot"], "envelopes": [hex(env)] });
    let at0 = |code: &str| json!({ "reject": code, "at": 0 });
    let cases: Vec<(String, Value, Value)> = vec![
        ("full v1".into(), one(&full1), json!({ "ok": state1 })),
        ("full v2".into(), one(&full2), json!({ "ok": state2 })),
        (
            "full v1 then delta 1->2 equals full v2".into(),
            json!({ "pinned": ["snapshot"], "envelopes": [hex(&full1), hex(&delta12)] }),
            json!({ "ok": state2 }),
        ),
        (
            "full v1 then full v2".into(),
            json!({ "pinned": ["snapshot"], "envelopes": [hex(&full1), hex(&full2)] }),
            json!({ "ok": state2 }),
        ),
        (
            "two pinned keys during a rotation".into(),
            json!({ "pinned": ["other", "snapshot"], "envelopes": [hex(&full1), hex(&delta12)] }),
            json!({ "ok": state2 }),
        ),
        (
            "signed by the other key, other key pinned".into(),
            json!({ "pinned": ["other"], "envelopes": [hex(&full1_other)] }),
            json!({ "ok": state1 }),
        ),
        (
            "wrong pinned key".into(),
            json!({ "pinned": ["other"], "envelopes": [hex(&full1)] }),
            at0("snapshot_unknown_signer"),
        ),
        (
            "no pinned key".into(),
            json!({ "pinned": [], "envelopes": [hex(&full1)] }),
            at0("snapshot_unknown_signer"),
        ),
        (
            "signed by an unpinned key that claims the pinned key's fingerprint".into(),
            one(&raw_envelope(OTHER_SNAPSHOT_SEED, fp, 0, payload1)),
            at0("snapshot_bad_signature"),
        ),
        (
            "flipped byte: magic".into(),
            one(&flip(&full1, 0)),
            at0("snapshot_bad_magic"),
        ),
        (
            "flipped byte: format version".into(),
            one(&flip(&full1, 4)),
            at0("snapshot_unsupported_version"),
        ),
        (
            "flipped byte: kind".into(),
            one(&flip(&full1, 5)),
            at0("snapshot_bad_signature"),
        ),
        (
            "flipped byte: signer fingerprint".into(),
            one(&flip(&full1, 6)),
            at0("snapshot_unknown_signer"),
        ),
        (
            "payload length one short".into(),
            one(&set_len(&full1, -1)),
            at0("snapshot_trailing_bytes"),
        ),
        (
            "payload length one long".into(),
            one(&set_len(&full1, 1)),
            at0("snapshot_malformed"),
        ),
        (
            "flipped byte: payload length high byte".into(),
            one(&flip(&full1, 14)),
            at0("snapshot_malformed"),
        ),
        (
            "flipped byte: payload version".into(),
            one(&flip(&full1, 25)),
            at0("snapshot_bad_signature"),
        ),
        (
            "flipped byte: a key digest".into(),
            one(&flip(&full1, 80)),
            at0("snapshot_bad_signature"),
        ),
        (
            "flipped byte: signature".into(),
            one(&flip(&full1, full1.len() - 10)),
            at0("snapshot_bad_signature"),
        ),
        (
            "flipped byte: delta payload".into(),
            json!({ "pinned": ["snapshot"], "envelopes": [hex(&full1), hex(&flip(&delta12, 40))] }),
            json!({ "reject": "snapshot_bad_signature", "at": 1 }),
        ),
        (
            "truncated: last byte missing".into(),
            one(&full1[..full1.len() - 1]),
            at0("snapshot_malformed"),
        ),
        (
            "truncated: signature missing".into(),
            one(&full1[..full1.len() - 64]),
            at0("snapshot_malformed"),
        ),
        (
            "truncated: header only".into(),
            one(&full1[..18]),
            at0("snapshot_malformed"),
        ),
        (
            "truncated: magic only".into(),
            one(&full1[..4]),
            at0("snapshot_malformed"),
        ),
        (
            "truncated: three bytes".into(),
            one(&full1[..3]),
            at0("snapshot_bad_magic"),
        ),
        ("empty".into(), one(&[]), at0("snapshot_bad_magic")),
        (
            "trailing bytes after the signature".into(),
            one(&[full1.as_slice(), &[0]].concat()),
            at0("snapshot_trailing_bytes"),
        ),
        (
            "bad magic: KGSX".into(),
            one(&[b"KGSX".as_slice(), &full1[4..]].concat()),
            at0("snapshot_bad_magic"),
        ),
        (
            "bad magic: JSON".into(),
            one(b"{\"version\":1}"),
            at0("snapshot_bad_magic"),
        ),
        (
            "format version 2".into(),
            one(&[b"KGSN\x02".as_slice(), &full1[5..]].concat()),
            at0("snapshot_unsupported_version"),
        ),
        (
            "signed, but the payload is truncated".into(),
            one(&raw_envelope(
                SNAPSHOT_SEED,
                fp,
                0,
                &payload1[..payload1.len() - 1],
            )),
            at0("snapshot_malformed"),
        ),
        (
            "signed, but the payload has trailing bytes".into(),
            one(&raw_envelope(
                SNAPSHOT_SEED,
                fp,
                0,
                &[payload1, &[0]].concat(),
            )),
            at0("snapshot_trailing_bytes"),
        ),
        (
            "signed, unknown kind 7".into(),
            one(&raw_envelope(SNAPSHOT_SEED, fp, 7, payload1)),
            at0("snapshot_malformed"),
        ),
        (
            "signed, key count forged to 2^32-1".into(),
            one(&raw_envelope(SNAPSHOT_SEED, fp, 0, &{
                // version(8) issued_at(8) signing_keys: count16 + (str8 "k1" + 32 bytes)
                let at = 8 + 8 + 2 + 3 + 32;
                let mut p = payload1.to_vec();
                p[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
                p
            })),
            at0("snapshot_malformed"),
        ),
        (
            "signed full snapshot carrying an invalid token key".into(),
            json!({ "pinned": ["snapshot"], "envelopes": [hex(&full1), hex(&signer.sign_full(&v3_bad))] }),
            json!({ "reject": "snapshot_malformed", "at": 1 }),
        ),
        (
            "delta applied without its base".into(),
            one(&delta12),
            at0("snapshot_base_mismatch"),
        ),
        (
            "delta applied twice".into(),
            json!({ "pinned": ["snapshot"], "envelopes": [hex(&full1), hex(&delta12), hex(&delta12)] }),
            json!({ "reject": "snapshot_base_mismatch", "at": 2 }),
        ),
        (
            "older full snapshot after a newer one".into(),
            json!({ "pinned": ["snapshot"], "envelopes": [hex(&full2), hex(&full1)] }),
            json!({ "reject": "snapshot_not_newer", "at": 1 }),
        ),
        (
            "larger than the configured bound".into(),
            json!({ "pinned": ["snapshot"], "envelopes": [hex(&full1)], "max_len": full1.len() - 1 }),
            at0("snapshot_too_large"),
        ),
    ];
    let ctx = json!({
        "public_keys": {
            "snapshot": snapshot::encode_public_key(&signer.verifying_key()),
            "other": snapshot::encode_public_key(&other.verifying_key()),
        },
        "seeds": { "snapshot": hex_encode(&SNAPSHOT_SEED), "other": hex_encode(&OTHER_SNAPSHOT_SEED) },
        "envelopes": { "full_v1": hex(&full1), "full_v2": hex(&full2), "delta_v1_v2": hex(&delta12) },
    });
    render(
        "Signed snapshot and delta envelopes (hex). input.pinned names keys in context.public_keys (base64url, as pinned in the filter config); the envelopes are decoded with snapshot::decode and applied in order to an empty MemStore. ok: the resulting MemStore::to_snapshot(). reject: SnapshotReject::code() and the index of the envelope that failed. Test-only seeds.",
        Some(ctx),
        &cases,
    )
}

fn gen_ollama_sig() -> String {
    let k1 = parse_openssh_private_key(OLLAMA_KEY_1);
    let k2 = parse_openssh_private_key(OLLAMA_KEY_2);
    let pk1 = *k1.verifying_key().as_bytes();
    let pk2 = *k2.verifying_key().as_bytes();
    let id1 = ollama_sig::key_id_for(&pk1);
    let id2 = ollama_sig::key_id_for(&pk2);
    // The header the CLI would send is reproduced by the test signer.
    assert_eq!(ollama_sign(&k1, "POST", "/api/chat", NOW), OLLAMA_HEADER_1);
    assert_eq!(
        ollama_sign(&k2, "HEAD", "/", 1_700_000_000),
        OLLAMA_HEADER_2
    );
    let (pub1, sig1) = OLLAMA_HEADER_1.split_once(':').unwrap();
    let (_, sig2) = OLLAMA_HEADER_2.split_once(':').unwrap();
    let sig1_bytes = base64::engine::general_purpose::STANDARD
        .decode(sig1)
        .unwrap();
    let flipped_sig = {
        let mut s = sig1_bytes.clone();
        s[10] ^= 0x01;
        format!(
            "{pub1}:{}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    };
    let ts1 = NOW;
    let ts2 = 1_700_000_000i64;
    let reg1 = json!([{ "key": "vector1" }]);
    let both = json!([{ "key": "vector1" }, { "key": "vector2" }]);
    let req = |auth: &str, method: &str, path: String, now: i64, registered: &Value| json!({ "authorization": auth, "method": method, "path": path, "now": now, "registered": registered });
    let ok1 = |forwarded: &str| json!({ "ok": { "key_id": id1, "ts": ts1, "public_key_hex": hex_encode(&pk1), "forwarded_path": forwarded } });
    let ok2 = |forwarded: &str| json!({ "ok": { "key_id": id2, "ts": ts2, "public_key_hex": hex_encode(&pk2), "forwarded_path": forwarded } });
    let chat = format!("/api/chat?ts={ts1}");
    let mut with_prefix = req(
        OLLAMA_HEADER_1,
        "POST",
        format!("/ollama/api/chat?ts={ts1}"),
        ts1,
        &reg1,
    );
    with_prefix["mount_prefix"] = json!("/ollama");
    let mut heartbeat_prefix = req(
        OLLAMA_HEADER_2,
        "HEAD",
        format!("/ollama/?ts={ts2}"),
        ts2,
        &both,
    );
    heartbeat_prefix["mount_prefix"] = json!("/ollama");
    let mut prefix_missing = req(OLLAMA_HEADER_1, "POST", chat.clone(), ts1, &reg1);
    prefix_missing["mount_prefix"] = json!("/ollama");
    let mut prefix_lookalike = req(
        OLLAMA_HEADER_1,
        "POST",
        format!("/ollamax/api/chat?ts={ts1}"),
        ts1,
        &reg1,
    );
    prefix_lookalike["mount_prefix"] = json!("/ollama");
    let mut narrow_window = req(OLLAMA_HEADER_1, "POST", chat.clone(), ts1 + 61, &reg1);
    narrow_window["window_secs"] = json!(60);
    let long_header = format!("{pub1}:{}", "A".repeat(600));
    let cases: Vec<(String, Value, Value)> = vec![
        (
            "issue 10 vector 1: POST /api/chat".into(),
            req(OLLAMA_HEADER_1, "POST", chat.clone(), ts1, &reg1),
            ok1("/api/chat"),
        ),
        (
            "issue 10 vector 2: HEAD / heartbeat".into(),
            req(OLLAMA_HEADER_2, "HEAD", format!("/?ts={ts2}"), ts2, &both),
            ok2("/"),
        ),
        (
            "vector 1, clock 300 s ahead (edge of window)".into(),
            req(OLLAMA_HEADER_1, "POST", chat.clone(), ts1 + 300, &reg1),
            ok1("/api/chat"),
        ),
        (
            "vector 1, clock 300 s behind (edge of window)".into(),
            req(OLLAMA_HEADER_1, "POST", chat.clone(), ts1 - 300, &reg1),
            ok1("/api/chat"),
        ),
        (
            "vector 1 through a /ollama mount prefix".into(),
            with_prefix,
            ok1("/ollama/api/chat"),
        ),
        (
            "vector 2 heartbeat through a /ollama mount prefix".into(),
            heartbeat_prefix,
            ok2("/ollama/"),
        ),
        (
            "flipped byte in the signature".into(),
            req(&flipped_sig, "POST", chat.clone(), ts1, &reg1),
            reject("sig_bad_signature"),
        ),
        (
            "vector 1 signature with vector 2's public key".into(),
            req(
                &format!("{}:{sig1}", OLLAMA_HEADER_2.split_once(':').unwrap().0),
                "POST",
                chat.clone(),
                ts1,
                &both,
            ),
            reject("sig_bad_signature"),
        ),
        (
            "vector 2 signature with vector 1's public key".into(),
            req(
                &format!("{pub1}:{sig2}"),
                "HEAD",
                format!("/?ts={ts2}"),
                ts2,
                &both,
            ),
            reject("sig_bad_signature"),
        ),
        (
            "wrong method: GET instead of POST".into(),
            req(OLLAMA_HEADER_1, "GET", chat.clone(), ts1, &reg1),
            reject("sig_bad_signature"),
        ),
        (
            "wrong method: lower-case post".into(),
            req(OLLAMA_HEADER_1, "post", chat.clone(), ts1, &reg1),
            reject("sig_bad_signature"),
        ),
        (
            "changed path: /api/generate".into(),
            req(
                OLLAMA_HEADER_1,
                "POST",
                format!("/api/generate?ts={ts1}"),
                ts1,
                &reg1,
            ),
            reject("sig_bad_signature"),
        ),
        (
            "changed path: trailing slash".into(),
            req(
                OLLAMA_HEADER_1,
                "POST",
                format!("/api/chat/?ts={ts1}"),
                ts1,
                &reg1,
            ),
            reject("sig_bad_signature"),
        ),
        (
            "changed ts: one second later".into(),
            req(
                OLLAMA_HEADER_1,
                "POST",
                format!("/api/chat?ts={}", ts1 + 1),
                ts1,
                &reg1,
            ),
            reject("sig_bad_signature"),
        ),
        (
            "changed ts: leading zero".into(),
            req(
                OLLAMA_HEADER_1,
                "POST",
                format!("/api/chat?ts=0{ts1}"),
                ts1,
                &reg1,
            ),
            reject("sig_bad_signature"),
        ),
        (
            "ts 301 s in the past".into(),
            req(OLLAMA_HEADER_1, "POST", chat.clone(), ts1 + 301, &reg1),
            reject("sig_stale"),
        ),
        (
            "ts 301 s in the future".into(),
            req(OLLAMA_HEADER_1, "POST", chat.clone(), ts1 - 301, &reg1),
            reject("sig_stale"),
        ),
        (
            "ts outside a configured 60 s window".into(),
            narrow_window,
            reject("sig_stale"),
        ),
        (
            "vector 2 replayed a year later".into(),
            req(
                OLLAMA_HEADER_2,
                "HEAD",
                format!("/?ts={ts2}"),
                ts2 + 365 * 86_400,
                &both,
            ),
            reject("sig_stale"),
        ),
        (
            "second query parameter after ts".into(),
            req(
                OLLAMA_HEADER_1,
                "POST",
                format!("{chat}&stream=false"),
                ts1,
                &reg1,
            ),
            reject("sig_extra_query"),
        ),
        (
            "second query parameter before ts".into(),
            req(
                OLLAMA_HEADER_1,
                "POST",
                format!("/api/chat?x=1&ts={ts1}"),
                ts1,
                &reg1,
            ),
            reject("sig_extra_query"),
        ),
        (
            "ts given twice".into(),
            req(
                OLLAMA_HEADER_1,
                "POST",
                format!("{chat}&ts={ts1}"),
                ts1,
                &reg1,
            ),
            reject("sig_extra_query"),
        ),
        (
            "no query string".into(),
            req(OLLAMA_HEADER_1, "POST", "/api/chat".into(), ts1, &reg1),
            reject("sig_missing_ts"),
        ),
        (
            "query without ts".into(),
            req(
                OLLAMA_HEADER_1,
                "POST",
                "/api/chat?stream=1".into(),
                ts1,
                &reg1,
            ),
            reject("sig_missing_ts"),
        ),
        (
            "ts is not a number".into(),
            req(
                OLLAMA_HEADER_1,
                "POST",
                "/api/chat?ts=soon".into(),
                ts1,
                &reg1,
            ),
            reject("sig_bad_ts"),
        ),
        (
            "ts is empty".into(),
            req(OLLAMA_HEADER_1, "POST", "/api/chat?ts=".into(), ts1, &reg1),
            reject("sig_bad_ts"),
        ),
        (
            "ts is negative".into(),
            req(
                OLLAMA_HEADER_1,
                "POST",
                "/api/chat?ts=-1".into(),
                ts1,
                &reg1,
            ),
            reject("sig_bad_ts"),
        ),
        (
            "ts has 13 digits".into(),
            req(
                OLLAMA_HEADER_1,
                "POST",
                "/api/chat?ts=1735689600000".into(),
                ts1,
                &reg1,
            ),
            reject("sig_bad_ts"),
        ),
        (
            "Bearer-prefixed signature".into(),
            req(
                &format!("Bearer {OLLAMA_HEADER_1}"),
                "POST",
                chat.clone(),
                ts1,
                &reg1,
            ),
            reject("sig_bearer_prefixed"),
        ),
        (
            "unregistered key (vector 2, only vector 1 registered)".into(),
            req(OLLAMA_HEADER_2, "HEAD", format!("/?ts={ts2}"), ts2, &reg1),
            reject("sig_unregistered_key"),
        ),
        (
            "no key registered at all".into(),
            req(OLLAMA_HEADER_1, "POST", chat.clone(), ts1, &json!([])),
            reject("sig_unregistered_key"),
        ),
        (
            "registered key that was revoked".into(),
            req(
                OLLAMA_HEADER_1,
                "POST",
                chat.clone(),
                ts1,
                &json!([{ "key": "vector1", "status": "revoked" }]),
            ),
            reject("key_revoked"),
        ),
        (
            "mount prefix configured, request without it".into(),
            prefix_missing,
            reject("sig_prefix_mismatch"),
        ),
        (
            "mount prefix configured, look-alike prefix".into(),
            prefix_lookalike,
            reject("sig_prefix_mismatch"),
        ),
        (
            "signature is 63 bytes".into(),
            req(
                &format!(
                    "{pub1}:{}",
                    base64::engine::general_purpose::STANDARD.encode(&sig1_bytes[..63])
                ),
                "POST",
                chat.clone(),
                ts1,
                &reg1,
            ),
            reject("sig_bad_signature_encoding"),
        ),
        (
            "signature is base64url, not standard base64".into(),
            req(
                &format!(
                    "{pub1}:{}",
                    base64::engine::general_purpose::URL_SAFE.encode(&sig1_bytes)
                ),
                "POST",
                chat.clone(),
                ts1,
                &reg1,
            ),
            reject("sig_bad_signature_encoding"),
        ),
        (
            "public key blob cut short".into(),
            req(
                &format!("AAAAC3NzaC1lZDI1NTE5AAAAIBLJ:{sig1}"),
                "POST",
                chat.clone(),
                ts1,
                &reg1,
            ),
            reject("sig_bad_public_key"),
        ),
        (
            "public key blob with a trailing byte".into(),
            req(
                &format!(
                    "{}:{sig1}",
                    base64::engine::general_purpose::STANDARD.encode(
                        [
                            base64::engine::general_purpose::STANDARD
                                .decode(pub1)
                                .unwrap()
                                .as_slice(),
                            &[0]
                        ]
                        .concat()
                    )
                ),
                "POST",
                chat.clone(),
                ts1,
                &reg1,
            ),
            reject("sig_bad_public_key"),
        ),
        (
            "header longer than 512 bytes".into(),
            req(&long_header, "POST", chat.clone(), ts1, &reg1),
            reject("sig_malformed"),
        ),
    ];
    let ctx = json!({
        "window_secs": ollama_sig::DEFAULT_WINDOW_SECS,
        "keys": {
            "vector1": { "private_key": OLLAMA_KEY_1, "public_key": format!("ssh-ed25519 {}", ssh_public_b64(&k1.verifying_key())) },
            "vector2": { "private_key": OLLAMA_KEY_2, "public_key": format!("ssh-ed25519 {}", ssh_public_b64(&k2.verifying_key())) },
        },
        "issue_vectors": [
            { "key": "vector1", "method": "POST", "path": "/api/chat", "ts": ts1, "signed_string": format!("POST,/api/chat?ts={ts1}"), "authorization": OLLAMA_HEADER_1, "key_id": id1 },
            { "key": "vector2", "method": "HEAD", "path": "/", "ts": ts2, "signed_string": format!("HEAD,/?ts={ts2}"), "authorization": OLLAMA_HEADER_2, "key_id": id2 },
        ],
    });
    render(
        "Ollama OLLAMA_AUTH signed requests (issue 10). Each case runs verify::authenticate on extract_credential(Authorization) with a MemStore holding input.registered (public keys from context.keys, id = ollama_sig::key_id_for), input.method, input.path (as received, with ?ts=) and input.now; sig_* reasons are also checked against ollama_sig::verify. input.window_secs / mount_prefix override the defaults (300 s, none). reject: DenyReason::code() (SigReject::code() for sig_*). The private keys are the test-only keys of issue 10.",
        Some(ctx),
        &cases,
    )
}

fn gen_decisions() -> String {
    let tok = token::TokenSigner::from_seed("k1", TOKEN_SEED);
    let k1 = parse_openssh_private_key(OLLAMA_KEY_1);
    let pk1 = *k1.verifying_key().as_bytes();
    let alice = key("alicexxxxxxx", 1);
    let bob = key("bobxxxxxxxxx", 2);
    let carol = key("carolxxxxxxx", 3);
    let dave_old = key("davexxxxxxxx", 4);
    let dave = key("davexxxxxxxx", 5);
    let erin = key("erinxxxxxxxx", 6);
    let frank = key("frankxxxxxxx", 7);
    let grace = key("gracexxxxxxx", 8);
    let heidi = key("heidixxxxxxx", 9);
    let ivan = key("ivanxxxxxxxx", 10);
    let judy = key("judyxxxxxxxx", 11);
    let mallory = key("malloryxxxxx", 12);
    let alice_wrong = key("alicexxxxxxx", 99);
    let mut dave_rec = api_record("dave", &dave, KeyStatus::Active, None, Policy::default());
    dave_rec.previous = Some(Previous {
        digest: dave_old.digest().0,
        valid_until: NOW + 3600,
    });
    let records = vec![
        api_record("alice", &alice, KeyStatus::Active, None, Policy::default()),
        api_record("bob", &bob, KeyStatus::Revoked, None, Policy::default()),
        api_record(
            "carol",
            &carol,
            KeyStatus::Active,
            Some(NOW + 100),
            Policy::default(),
        ),
        dave_rec,
        api_record(
            "erin",
            &erin,
            KeyStatus::Active,
            None,
            policy(&["inference", "read", "admin"], &[], None),
        ),
        api_record(
            "frank",
            &frank,
            KeyStatus::Active,
            None,
            policy(
                &["inference", "read"],
                &["llama3*", "qwen3:8b"],
                Some(("10/s", 20)),
            ),
        ),
        api_record(
            "grace",
            &grace,
            KeyStatus::Active,
            None,
            policy(&["inference", "read"], &["*"], None),
        ),
        api_record(
            "heidi",
            &heidi,
            KeyStatus::Active,
            None,
            policy(
                &["inference", "read"],
                &["gpt-oss:120b-cloud", "llama3"],
                None,
            ),
        ),
        api_record(
            "ivan",
            &ivan,
            KeyStatus::Active,
            None,
            policy(&["read"], &[], None),
        ),
        api_record(
            "judy",
            &judy,
            KeyStatus::Active,
            None,
            policy(&["admin"], &["llama3*"], None),
        ),
        KeyRecord {
            id: ollama_sig::key_id_for(&pk1),
            name: "laptop".into(),
            kind: KeyKind::OllamaKey,
            digest: pk1,
            previous: None,
            status: KeyStatus::Active,
            expires_at: None,
            policy: Policy::default(),
        },
    ];
    let claims = |sub: &str, jti: &str, iat: i64, exp: i64| token::Claims {
        iss: "keyd".into(),
        sub: sub.into(),
        iat,
        exp,
        nbf: None,
        jti: jti.into(),
        scope: vec!["inference".into(), "read".into()],
        models: vec![],
    };
    let t_alice = tok.mint(&claims("alicexxxxxxx", "t-alice", NOW - 60, NOW + 840));
    let t_revoked = tok.mint(&claims("alicexxxxxxx", "t-revoked", NOW - 60, NOW + 840));
    let t_bob = tok.mint(&claims("bobxxxxxxxxx", "t-bob", NOW - 60, NOW + 840));
    let t_expired = tok.mint(&claims("alicexxxxxxx", "t-old", NOW - 3600, NOW - 1800));
    let t_gone = tok.mint(&claims("gonexxxxxxxx", "t-gone", NOW - 60, NOW + 840));
    let t_frank = tok.mint(&claims("frankxxxxxxx", "t-frank", NOW - 60, NOW + 840));
    let bearer = |k: &ApiKey| format!("Bearer {}", k.expose_secret());
    let b = |t: &str| format!("Bearer {t}");

    struct R {
        method: &'static str,
        path: String,
        auth: Option<String>,
        x_api_key: Option<String>,
        ce: Option<&'static str>,
        body: Option<&'static str>,
        now: i64,
    }
    let get = |path: &str, auth: String| R {
        method: "GET",
        path: path.into(),
        auth: Some(auth),
        x_api_key: None,
        ce: None,
        body: None,
        now: NOW,
    };
    let post = |path: &str, auth: String, body: &'static str| R {
        method: "POST",
        path: path.into(),
        auth: Some(auth),
        x_api_key: None,
        ce: None,
        body: Some(body),
        now: NOW,
    };
    let at = |mut r: R, now: i64| {
        r.now = now;
        r
    };
    let allow = |id: &str, via: &str| json!({ "allow": { "key_id": id, "via": via } });
    let deny = |code: &str, status: u16| json!({ "deny": code, "status": status });
    let ak = "api_key";
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("anything:{}", alice.expose_secret()))
    );
    let bad_checksum = {
        let t = alice.expose_secret();
        let last = t.len() - 1;
        with_char(t, last, if t.ends_with('a') { 'b' } else { 'a' })
    };
    let cases_r: Vec<(&str, R, Value)> = vec![
        (
            "api key, read route",
            get("/api/tags", bearer(&alice)),
            allow("alicexxxxxxx", ak),
        ),
        (
            "api key, heartbeat",
            R {
                method: "HEAD",
                ..get("/", bearer(&alice))
            },
            allow("alicexxxxxxx", ak),
        ),
        (
            "api key in x-api-key",
            R {
                auth: None,
                x_api_key: Some(alice.expose_secret().into()),
                ..get("/api/tags", String::new())
            },
            allow("alicexxxxxxx", ak),
        ),
        (
            "api key as Basic auth password",
            get("/api/tags", basic),
            allow("alicexxxxxxx", ak),
        ),
        (
            "lower-case bearer scheme",
            get("/api/tags", format!("bearer {}", alice.expose_secret())),
            allow("alicexxxxxxx", ak),
        ),
        (
            "Authorization wins over x-api-key",
            R {
                x_api_key: Some(alice.expose_secret().into()),
                ..get("/api/tags", bearer(&bob))
            },
            deny("key_revoked", 401),
        ),
        (
            "no credential",
            R {
                auth: None,
                ..get("/api/tags", String::new())
            },
            deny("no_credential", 401),
        ),
        (
            "empty Authorization",
            get("/api/tags", "  ".into()),
            deny("no_credential", 401),
        ),
        (
            "unsupported scheme",
            get("/api/tags", "Digest username=\"a\"".into()),
            deny("credential_unparseable", 401),
        ),
        (
            "Basic auth that is not base64",
            get("/api/tags", "Basic %%%".into()),
            deny("credential_unparseable", 401),
        ),
        (
            "bearer text that is no key",
            get("/api/tags", "Bearer hello".into()),
            deny("key_wrong_prefix", 401),
        ),
        (
            "bad checksum",
            get("/api/tags", format!("Bearer {bad_checksum}")),
            deny("key_bad_checksum", 401),
        ),
        (
            "unknown key id",
            get("/api/tags", bearer(&mallory)),
            deny("key_unknown", 401),
        ),
        (
            "right id, wrong secret",
            get("/api/tags", bearer(&alice_wrong)),
            deny("key_wrong_secret", 401),
        ),
        (
            "revoked key",
            get("/api/tags", bearer(&bob)),
            deny("key_revoked", 401),
        ),
        (
            "key one second before expiry",
            at(get("/api/tags", bearer(&carol)), NOW + 99),
            allow("carolxxxxxxx", ak),
        ),
        (
            "key at its expiry",
            at(get("/api/tags", bearer(&carol)), NOW + 100),
            deny("key_expired", 401),
        ),
        (
            "rotated key: new secret",
            get("/api/tags", bearer(&dave)),
            allow("davexxxxxxxx", ak),
        ),
        (
            "rotated key: old secret in grace",
            at(get("/api/tags", bearer(&dave_old)), NOW + 3599),
            allow("davexxxxxxxx", ak),
        ),
        (
            "rotated key: old secret after grace",
            at(get("/api/tags", bearer(&dave_old)), NOW + 3600),
            deny("key_wrong_secret", 401),
        ),
        (
            "rotated key: new secret after grace",
            at(get("/api/tags", bearer(&dave)), NOW + 3600),
            allow("davexxxxxxxx", ak),
        ),
        (
            "admin route not granted: pull",
            post("/api/pull", bearer(&alice), r#"{"model":"llama3"}"#),
            deny("route_not_granted", 403),
        ),
        (
            "admin route not granted: delete",
            R {
                method: "DELETE",
                ..post("/api/delete", bearer(&alice), r#"{"model":"llama3"}"#)
            },
            deny("route_not_granted", 403),
        ),
        (
            "admin route not granted: blobs",
            post("/api/blobs/sha256:aaaa", bearer(&alice), ""),
            deny("route_not_granted", 403),
        ),
        (
            "admin route not granted: /api/me",
            post("/api/me", bearer(&alice), ""),
            deny("route_not_granted", 403),
        ),
        (
            "admin route granted: pull",
            post("/api/pull", bearer(&erin), r#"{"model":"llama3"}"#),
            allow("erinxxxxxxxx", ak),
        ),
        (
            "admin route granted: blobs",
            post("/api/blobs/sha256:aaaa", bearer(&erin), ""),
            allow("erinxxxxxxxx", ak),
        ),
        (
            "read-only key on inference",
            post("/api/chat", bearer(&ivan), r#"{"model":"llama3"}"#),
            deny("route_not_granted", 403),
        ),
        (
            "read-only key on read",
            get("/api/tags", bearer(&ivan)),
            allow("ivanxxxxxxxx", ak),
        ),
        (
            "unknown route",
            get("/api/unknown", bearer(&alice)),
            deny("route_unknown", 403),
        ),
        (
            "traversal to an admin route",
            post("/api/chat/../pull", bearer(&erin), r#"{"model":"llama3"}"#),
            deny("route_unknown", 403),
        ),
        (
            "encoded path",
            post("/api/%63hat", bearer(&alice), r#"{"model":"llama3"}"#),
            deny("route_unknown", 403),
        ),
        (
            "allowlist: glob match",
            post("/api/chat", bearer(&frank), r#"{"model":"llama3.2"}"#),
            allow("frankxxxxxxx", ak),
        ),
        (
            "allowlist: case-changed name with tag",
            post(
                "/api/chat",
                bearer(&frank),
                r#"{"model":"LLAMA3.2:Latest"}"#,
            ),
            allow("frankxxxxxxx", ak),
        ),
        (
            "allowlist: exact entry, fully qualified",
            post(
                "/api/generate",
                bearer(&frank),
                r#"{"model":"registry.ollama.ai/library/qwen3:8b"}"#,
            ),
            allow("frankxxxxxxx", ak),
        ),
        (
            "allowlist: exact entry, upper case",
            post("/api/embed", bearer(&frank), r#"{"model":"QWEN3:8B"}"#),
            allow("frankxxxxxxx", ak),
        ),
        (
            "allowlist: other tag of an exact entry",
            post("/api/chat", bearer(&frank), r#"{"model":"qwen3"}"#),
            deny("model_not_allowed", 403),
        ),
        (
            "allowlist: model not listed",
            post("/api/chat", bearer(&frank), r#"{"model":"mistral"}"#),
            deny("model_not_allowed", 403),
        ),
        (
            "allowlist: same name in another namespace",
            post("/api/chat", bearer(&frank), r#"{"model":"evil/llama3"}"#),
            deny("model_not_allowed", 403),
        ),
        (
            "allowlist: OpenAI route",
            post(
                "/v1/chat/completions",
                bearer(&frank),
                r#"{"model":"mistral","messages":[]}"#,
            ),
            deny("model_not_allowed", 403),
        ),
        (
            "allowlist: /v1/responses",
            post(
                "/v1/responses",
                bearer(&frank),
                r#"{"model":"llama3","input":"hi"}"#,
            ),
            allow("frankxxxxxxx", ak),
        ),
        (
            "allowlist: /v1/messages",
            post(
                "/v1/messages",
                bearer(&frank),
                r#"{"model":"mistral","messages":[]}"#,
            ),
            deny("model_not_allowed", 403),
        ),
        (
            "allowlist: /api/show",
            post("/api/show", bearer(&frank), r#"{"model":"mistral"}"#),
            deny("model_not_allowed", 403),
        ),
        (
            "allowlist: /api/show with name",
            post("/api/show", bearer(&frank), r#"{"name":"mistral"}"#),
            deny("model_not_allowed", 403),
        ),
        (
            "body field Model (Go matches case-insensitively)",
            post("/api/chat", bearer(&frank), r#"{"Model":"mistral"}"#),
            deny("model_not_allowed", 403),
        ),
        (
            "body field MODEL naming an allowed model",
            post("/api/chat", bearer(&frank), r#"{"MODEL":"llama3"}"#),
            allow("frankxxxxxxx", ak),
        ),
        (
            "body field name with a \\u0065 escape",
            post("/api/chat", bearer(&frank), r#"{"mod\u0065l":"mistral"}"#),
            deny("model_not_allowed", 403),
        ),
        (
            "model and Model naming different models",
            post(
                "/api/chat",
                bearer(&frank),
                r#"{"model":"llama3","Model":"mistral"}"#,
            ),
            deny("model_not_allowed", 403),
        ),
        (
            "duplicate model field, allowed one last",
            post(
                "/api/chat",
                bearer(&frank),
                r#"{"model":"mistral","model":"llama3"}"#,
            ),
            deny("model_not_allowed", 403),
        ),
        (
            "duplicate model field, allowed one first",
            post(
                "/api/chat",
                bearer(&frank),
                r#"{"model":"llama3","model":"mistral"}"#,
            ),
            deny("model_not_allowed", 403),
        ),
        (
            "missing model",
            post("/api/chat", bearer(&frank), r#"{"messages":[]}"#),
            deny("model_missing", 400),
        ),
        (
            "missing model, no allowlist",
            post("/api/chat", bearer(&alice), r#"{"messages":[]}"#),
            deny("model_missing", 400),
        ),
        (
            "model is a number",
            post("/api/chat", bearer(&frank), r#"{"model":5}"#),
            deny("body_invalid", 400),
        ),
        (
            "model is null",
            post("/api/chat", bearer(&frank), r#"{"model":null}"#),
            deny("body_invalid", 400),
        ),
        (
            "body is not JSON",
            post("/api/chat", bearer(&frank), "model=llama3"),
            deny("body_invalid", 400),
        ),
        (
            "body is a JSON array",
            post("/api/chat", bearer(&frank), r#"[{"model":"llama3"}]"#),
            deny("body_invalid", 400),
        ),
        (
            "body with trailing data",
            post(
                "/api/chat",
                bearer(&frank),
                r#"{"model":"llama3"} {"model":"mistral"}"#,
            ),
            deny("body_invalid", 400),
        ),
        (
            "invalid model name",
            post("/api/chat", bearer(&frank), r#"{"model":"a//b"}"#),
            deny("model_invalid", 400),
        ),
        (
            "model pinned by digest",
            post(
                "/api/chat",
                bearer(&frank),
                r#"{"model":"llama3@sha256:0000"}"#,
            ),
            deny("model_invalid", 400),
        ),
        (
            "model-scoped route without the body",
            R {
                body: None,
                ..post("/api/chat", bearer(&frank), "")
            },
            deny("model_unverifiable", 403),
        ),
        (
            "zstd body on a model-scoped route",
            R {
                ce: Some("zstd"),
                ..post(
                    "/v1/chat/completions",
                    bearer(&frank),
                    r#"{"model":"llama3"}"#,
                )
            },
            deny("content_encoding_not_allowed", 415),
        ),
        (
            "gzip body on a model-scoped route",
            R {
                ce: Some("gzip"),
                ..post("/api/chat", bearer(&frank), r#"{"model":"llama3"}"#)
            },
            deny("content_encoding_not_allowed", 415),
        ),
        (
            "zstd body, key without allowlist (cloud check needs the body)",
            R {
                ce: Some("zstd"),
                ..post(
                    "/v1/chat/completions",
                    bearer(&alice),
                    r#"{"model":"llama3"}"#,
                )
            },
            deny("content_encoding_not_allowed", 415),
        ),
        (
            "identity content-encoding",
            R {
                ce: Some("identity"),
                ..post(
                    "/v1/chat/completions",
                    bearer(&frank),
                    r#"{"model":"llama3"}"#,
                )
            },
            allow("frankxxxxxxx", ak),
        ),
        (
            "zstd on a route without a model",
            R {
                ce: Some("zstd"),
                ..get("/api/tags", bearer(&frank))
            },
            allow("frankxxxxxxx", ak),
        ),
        (
            "model in the path: allowed",
            get("/v1/models/llama3", bearer(&frank)),
            allow("frankxxxxxxx", ak),
        ),
        (
            "model in the path: not allowed",
            get("/v1/models/mistral", bearer(&frank)),
            deny("model_not_allowed", 403),
        ),
        (
            "model in the path: namespaced",
            get("/v1/models/library/LLAMA3:latest", bearer(&frank)),
            allow("frankxxxxxxx", ak),
        ),
        (
            "audio transcription with an allowlist",
            post("/v1/audio/transcriptions", bearer(&frank), ""),
            deny("model_unverifiable", 403),
        ),
        (
            "audio transcription without an allowlist",
            post("/v1/audio/transcriptions", bearer(&alice), ""),
            allow("alicexxxxxxx", ak),
        ),
        (
            "cloud model, allowlist *",
            post(
                "/api/chat",
                bearer(&grace),
                r#"{"model":"gpt-oss:120b-cloud"}"#,
            ),
            deny("model_cloud", 403),
        ),
        (
            "cloud model with :cloud tag, allowlist *",
            post("/api/chat", bearer(&grace), r#"{"model":"glm-4.6:cloud"}"#),
            deny("model_cloud", 403),
        ),
        (
            "local model, allowlist *",
            post("/api/chat", bearer(&grace), r#"{"model":"llama3"}"#),
            allow("gracexxxxxxx", ak),
        ),
        (
            "cloud model, no allowlist",
            post(
                "/api/chat",
                bearer(&alice),
                r#"{"model":"gpt-oss:120b-cloud"}"#,
            ),
            deny("model_cloud", 403),
        ),
        (
            "cloud model named explicitly, case changed",
            post(
                "/api/chat",
                bearer(&heidi),
                r#"{"model":"GPT-OSS:120B-CLOUD"}"#,
            ),
            allow("heidixxxxxxx", ak),
        ),
        (
            "other cloud model than the one named",
            post(
                "/api/chat",
                bearer(&heidi),
                r#"{"model":"gpt-oss:20b-cloud"}"#,
            ),
            deny("model_cloud", 403),
        ),
        (
            "cloud model through /api/pull (admin key)",
            post(
                "/api/pull",
                bearer(&erin),
                r#"{"model":"gpt-oss:120b-cloud"}"#,
            ),
            deny("model_cloud", 403),
        ),
        (
            "copy: both names allowed",
            post(
                "/api/copy",
                bearer(&judy),
                r#"{"source":"llama3","destination":"llama3-mine"}"#,
            ),
            allow("judyxxxxxxxx", ak),
        ),
        (
            "copy: source not allowed",
            post(
                "/api/copy",
                bearer(&judy),
                r#"{"source":"mistral","destination":"llama3-mine"}"#,
            ),
            deny("model_not_allowed", 403),
        ),
        (
            "copy: destination not allowed",
            post(
                "/api/copy",
                bearer(&judy),
                r#"{"source":"llama3","destination":"mistral"}"#,
            ),
            deny("model_not_allowed", 403),
        ),
        (
            "copy: source spelled with U+017F (Go folds it to s)",
            post(
                "/api/copy",
                bearer(&judy),
                "{\"\u{17f}ource\":\"mistral\",\"destination\":\"llama3-mine\"}",
            ),
            deny("model_not_allowed", 403),
        ),
        (
            "create: from not allowed",
            post(
                "/api/create",
                bearer(&judy),
                r#"{"model":"llama3-mine","from":"mistral"}"#,
            ),
            deny("model_not_allowed", 403),
        ),
        (
            "create: From in another case",
            post(
                "/api/create",
                bearer(&judy),
                r#"{"model":"llama3-mine","FROM":"mistral"}"#,
            ),
            deny("model_not_allowed", 403),
        ),
        (
            "delete: model not allowed",
            R {
                method: "DELETE",
                ..post("/api/delete", bearer(&judy), r#"{"model":"mistral"}"#)
            },
            deny("model_not_allowed", 403),
        ),
        (
            "token: valid",
            get("/api/tags", b(&t_alice)),
            allow("alicexxxxxxx", "token"),
        ),
        (
            "token: model policy of the parent key applies",
            post("/api/chat", b(&t_frank), r#"{"model":"mistral"}"#),
            deny("model_not_allowed", 403),
        ),
        (
            "token: revoked jti",
            get("/api/tags", b(&t_revoked)),
            deny("token_revoked", 401),
        ),
        (
            "token: parent key revoked",
            get("/api/tags", b(&t_bob)),
            deny("token_revoked", 401),
        ),
        (
            "token: parent key deleted",
            get("/api/tags", b(&t_gone)),
            deny("token_revoked", 401),
        ),
        (
            "token: expired",
            get("/api/tags", b(&t_expired)),
            deny("token_expired", 401),
        ),
        (
            "token: in x-api-key",
            R {
                auth: None,
                x_api_key: Some(t_alice.clone()),
                ..get("/api/tags", String::new())
            },
            allow("alicexxxxxxx", "token"),
        ),
        (
            "signed request: registered key",
            R {
                method: "POST",
                path: format!("/api/chat?ts={NOW}"),
                auth: Some(OLLAMA_HEADER_1.into()),
                x_api_key: None,
                ce: None,
                body: Some(r#"{"model":"llama3"}"#),
                now: NOW,
            },
            allow(&ollama_sig::key_id_for(&pk1), "signed"),
        ),
        (
            "signed request: cloud model",
            R {
                method: "POST",
                path: format!("/api/chat?ts={NOW}"),
                auth: Some(OLLAMA_HEADER_1.into()),
                x_api_key: None,
                ce: None,
                body: Some(r#"{"model":"gpt-oss:120b-cloud"}"#),
                now: NOW,
            },
            deny("model_cloud", 403),
        ),
        (
            "signed request: unregistered key",
            R {
                method: "HEAD",
                path: "/?ts=1700000000".into(),
                auth: Some(OLLAMA_HEADER_2.into()),
                x_api_key: None,
                ce: None,
                body: None,
                now: 1_700_000_000,
            },
            deny("sig_unregistered_key", 401),
        ),
        (
            "signed request: stale",
            R {
                method: "POST",
                path: format!("/api/chat?ts={NOW}"),
                auth: Some(OLLAMA_HEADER_1.into()),
                x_api_key: None,
                ce: None,
                body: Some(r#"{"model":"llama3"}"#),
                now: NOW + 600,
            },
            deny("sig_stale", 401),
        ),
    ];
    let mut cases: Vec<(String, Value, Value)> = cases_r
        .into_iter()
        .map(|(name, r, expect)| {
            let mut input = json!({ "method": r.method, "path": r.path, "now": r.now });
            if let Some(a) = r.auth {
                input["authorization"] = json!(a);
            }
            if let Some(x) = r.x_api_key {
                input["x_api_key"] = json!(x);
            }
            if let Some(ce) = r.ce {
                input["content_encoding"] = json!(ce);
            }
            if let Some(body) = r.body {
                input["body"] = json!(body);
            }
            (name.to_owned(), input, expect)
        })
        .collect();
    let prefixed = |name: &str,
                    method: &str,
                    path: String,
                    auth: &str,
                    body: Option<&str>,
                    expect: Value| {
        let mut input = json!({ "method": method, "path": path, "now": NOW, "authorization": auth, "mount_prefix": "/ollama" });
        if let Some(b) = body {
            input["body"] = json!(b);
        }
        (name.to_owned(), input, expect)
    };
    cases.extend([
        prefixed(
            "mount prefix: signed request",
            "POST",
            format!("/ollama/api/chat?ts={NOW}"),
            OLLAMA_HEADER_1,
            Some(r#"{"model":"llama3"}"#),
            allow(&ollama_sig::key_id_for(&pk1), "signed"),
        ),
        prefixed(
            "mount prefix: api key, read route",
            "GET",
            "/ollama/api/tags".into(),
            &bearer(&alice),
            None,
            allow("alicexxxxxxx", ak),
        ),
        prefixed(
            "mount prefix: api key, heartbeat",
            "GET",
            "/ollama".into(),
            &bearer(&alice),
            None,
            allow("alicexxxxxxx", ak),
        ),
        prefixed(
            "mount prefix: admin route still not granted",
            "POST",
            "/ollama/api/pull".into(),
            &bearer(&alice),
            Some(r#"{"model":"llama3"}"#),
            deny("route_not_granted", 403),
        ),
        prefixed(
            "mount prefix: look-alike prefix is unknown",
            "GET",
            "/ollamax/api/tags".into(),
            &bearer(&alice),
            None,
            deny("route_unknown", 403),
        ),
        prefixed(
            "mount prefix: path outside the prefix",
            "GET",
            "/api/tags".into(),
            &bearer(&alice),
            None,
            allow("alicexxxxxxx", ak),
        ),
    ]);
    let ctx = json!({
        "now": NOW,
        "engine": { "token_max_lifetime": 86_400, "token_leeway": 30, "sig_window_secs": 300 },
        "keys": records.iter().map(record_to_json).collect::<Vec<_>>(),
        "signing_keys": [{ "kid": "k1", "public_key": b64url_encode(tok.verifying_key().as_bytes()) }],
        "revoked_tokens": [{ "jti": "t-revoked", "exp": NOW + 840 }],
    });
    render(
        "The decision engine (verify::decide) against a MemStore built from context.keys (digests, as snapshots carry them), context.signing_keys and context.revoked_tokens. input: the request (method, path with query, authorization, x_api_key, content_encoding, body as text), now, and optionally the mount_prefix the gateway is served under. allow: key id and how the caller authenticated; deny: DenyReason::code() and the HTTP status.",
        Some(ctx),
        &cases,
    )
}

/// Writes the crypto-derived vector files. Run after an intentional format change, then
/// review the diff: the committed files are what keyd and the filter are tested against.
#[test]
#[ignore = "writes core/tests/vectors/*.json; run by hand"]
fn generate_vectors() {
    write("keys.json", &gen_keys());
    write("tokens.json", &gen_tokens());
    write("snapshots.json", &gen_snapshots());
    write("ollama_sig.json", &gen_ollama_sig());
    write("decisions.json", &gen_decisions());
}
