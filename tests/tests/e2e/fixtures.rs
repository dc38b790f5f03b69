//! Keys, tokens and a running stack (fake Ollama + a snapshot source + Envoy) for the tests.

use keygate_core::apikey::{ApiKey, KeyId};
use keygate_core::policy::Policy;
use keygate_core::snapshot::{KeyKind, KeyRecord, KeyStatus, SigningPub, Snapshot};
use keygate_core::token::TokenSigner;
use keygate_e2e::envoy::{local_opts, Envoy};
use keygate_e2e::fake_keyd::FakeKeyd;
use keygate_e2e::fake_ollama::FakeOllama;
use keygate_e2e::tools;
use std::sync::atomic::{AtomicU8, Ordering};

pub const CREDENTIAL: &str = "kgf_e2e_test_filter_credential";

static NEXT: AtomicU8 = AtomicU8::new(1);

/// A fresh API key and its snapshot record (default policy).
pub fn api_key(name: &str) -> (ApiKey, KeyRecord) {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let mut rnd = [0u8; 8];
    rnd[0] = n;
    rnd[1..].copy_from_slice(&std::process::id().to_be_bytes()[..].repeat(2)[..7]);
    let id = KeyId::from_random(rnd);
    let key = ApiKey::generate(&id, [n; 32]);
    let rec = KeyRecord {
        id: id.as_str().to_owned(),
        name: name.to_owned(),
        kind: KeyKind::ApiKey,
        digest: key.digest().0,
        previous: None,
        status: KeyStatus::Active,
        expires_at: None,
        policy: Policy::default(),
    };
    (key, rec)
}

pub fn token_signer() -> TokenSigner {
    TokenSigner::from_seed("e2e-1", [42; 32])
}

pub fn signing_keys() -> Vec<SigningPub> {
    vec![SigningPub {
        kid: "e2e-1".into(),
        key: token_signer().verifying_key().to_bytes(),
    }]
}

/// Envoy + fake Ollama + the test-controlled snapshot source.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub ollama: FakeOllama,
    pub keyd: FakeKeyd,
    pub envoy: Envoy,
}

impl Stack {
    /// `None` when Envoy or the wasm is missing outside CI (the test is skipped).
    pub fn start(keys: Vec<KeyRecord>, edit: impl FnOnce(String) -> String) -> Option<Stack> {
        let envoy_bin = tools::envoy()?;
        let wasm = tools::wasm()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let ollama = FakeOllama::start(dir.path(), &["--loopback-host-check"]);
        let snap = Snapshot {
            signing_keys: signing_keys(),
            keys,
            ..Snapshot::default()
        };
        let keyd = FakeKeyd::start(
            keygate_core::snapshot::SnapshotSigner::from_seed([5; 32]),
            CREDENTIAL,
            snap,
        );
        let opts = local_opts(
            &ollama.url(),
            &[keyd.url()],
            &wasm,
            vec![keyd.public_key()],
            CREDENTIAL,
        );
        let envoy = Envoy::start(&envoy_bin, dir.path(), &opts, edit);
        envoy.wait_ready();
        Some(Stack {
            dir,
            ollama,
            keyd,
            envoy,
        })
    }
}
