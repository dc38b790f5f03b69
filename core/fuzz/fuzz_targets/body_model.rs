//! Request bodies on model-scoped routes: model extraction and the allowlist check.
#![no_main]
use keygate_core::policy::{self, Policy, RouteSet};
use keygate_core::verify::{self, Principal, Via};

libfuzzer_sys::fuzz_target!(|body: &[u8]| {
    let policy = Policy {
        routes: RouteSet::default_grant(),
        models: policy::parse_models(&["llama3*", "qwen3:8b", "gpt-oss:120b-cloud"])
            .unwrap_or_default(),
        rate: None,
    };
    let principal = Principal {
        key_id: "aaaaaaaaaaaa".into(),
        name: "fuzz".into(),
        policy,
        via: Via::ApiKey,
        token_exp: None,
        jti: None,
    };
    let _ = verify::authorize_body(&principal, body);
});
