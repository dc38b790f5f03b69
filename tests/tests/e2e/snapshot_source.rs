//! The filter against a snapshot source the test controls byte for byte.

use crate::fixtures::{api_key, Stack};
use keygate_e2e::http::{bearer, get};

#[test]
fn smoke_valid_key_passes_and_missing_credential_is_refused() {
    let (key, rec) = api_key("smoke");
    let Some(s) = Stack::start(vec![rec.clone()], |y| y) else {
        return;
    };
    let r = get(&s.envoy.url("/api/tags"), &[]);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(s.ollama.requests().is_empty());
    let auth = bearer(key.expose_secret());
    let r = get(&s.envoy.url("/api/tags"), &[("authorization", &auth)]);
    assert_eq!(r.status, 200, "{} {}", r.body, s.envoy.proc.output());
    let seen = s.ollama.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("x-keygate-key-id").as_deref(),
        Some(rec.id.as_str())
    );
    assert_eq!(seen[0].header("authorization"), None);
}
