//! The whole decision on attacker-controlled request fields. With `use_key` the request
//! carries a valid API key for the store, so route, encoding and body checks are reached.
#![no_main]
use keygate_core::apikey::{ApiKey, KeyId};
use keygate_core::policy::{self, Policy, RouteSet};
use keygate_core::snapshot::{KeyKind, KeyRecord, KeyStatus, MemStore};
use keygate_core::verify::{self, EngineConfig, RequestView};
use std::sync::OnceLock;

static FIXTURE: OnceLock<(MemStore, String)> = OnceLock::new();

fn fixture() -> (MemStore, String) {
    let id = KeyId::from_random([1; 8]);
    let key = ApiKey::generate(&id, [2; 32]);
    let mut store = MemStore::new();
    store.upsert(KeyRecord {
        id: id.as_str().to_owned(),
        name: "fuzz".into(),
        kind: KeyKind::ApiKey,
        digest: key.digest().0,
        previous: None,
        status: KeyStatus::Active,
        expires_at: None,
        policy: Policy {
            routes: RouteSet::from_bits(7),
            models: policy::parse_models(&["llama3*", "qwen3:8b"]).unwrap_or_default(),
            rate: None,
        },
    });
    (store, format!("Bearer {}", key.expose_secret()))
}

libfuzzer_sys::fuzz_target!(|input: (
    bool,
    &str,
    &str,
    Option<&str>,
    Option<&str>,
    Option<&str>,
    Option<&[u8]>
)| {
    let (use_key, method, path, authorization, x_api_key, content_encoding, body) = input;
    let (store, bearer) = FIXTURE.get_or_init(fixture);
    let authorization = if use_key {
        Some(bearer.as_str())
    } else {
        authorization
    };
    let req = RequestView {
        method,
        path,
        authorization,
        x_api_key,
        content_encoding,
        body,
    };
    let _ = verify::decide(&req, store, 1_735_689_600, &EngineConfig::default());
});
