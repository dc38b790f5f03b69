//! Decision cost per request, with 1,000 and 1,000,000 keys loaded.
//!
//! `cargo bench -p keygate-core --bench decision`
//!
//! Budget (DESIGN.md "Performance budget"): an API-key decision under 1 µs natively, and the
//! 1M-key figure within noise of the 1k one (key count changes memory, never per-request
//! time). Requests cycle through up to 65,536 different keys spread over the whole store,
//! so the 1M case pays the cache misses a real key population causes instead of hitting
//! one hot record.
//!
//! * `api_key/read` — `verify::decide`, `GET /api/tags`, `Authorization: Bearer kg_…`.
//! * `api_key/chat_body` — `verify::decide`, `POST /api/chat` with a JSON body and a key
//!   with a model allowlist (body parse + normalisation + glob match).
//! * `api_key/headers_only` — `extract_credential` + `authenticate` + `authorize_route`,
//!   what the filter runs in its header phase.
//! * `token/verify` — `verify::decide` with a fresh EdDSA token (one Ed25519 verification).
//! * `token/cached` — `principal_for_token` + `authorize_route`: a token whose signature
//!   was verified earlier (the filter caches verified tokens by digest until `exp`).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use keygate_core::apikey::{ApiKey, KeyId};
use keygate_core::policy::{self, Policy, RouteSet};
use keygate_core::routes;
use keygate_core::snapshot::{KeyKind, KeyRecord, KeyStatus, MemStore, SigningPub};
use keygate_core::token::{Claims, TokenSigner};
use keygate_core::verify::{self, EngineConfig, RequestView};

const NOW: i64 = 1_735_689_600;
const SIZES: &[usize] = &[1_000, 1_000_000];
/// Different keys the benchmark cycles through (a power of two, for cheap wrapping).
const SAMPLE: usize = 65_536;
const TOKENS: usize = 1_024;

struct Fixture {
    store: MemStore,
    /// `Bearer <key>` for keys spread evenly over the store.
    bearers: Vec<String>,
    /// `Bearer <key>` for keys with a model allowlist.
    allowlisted: Vec<String>,
    tokens: Vec<String>,
    /// (sub, jti, exp) of `tokens`, as a token cache holds them.
    cached: Vec<(String, String, i64)>,
}

fn id_for(i: usize) -> KeyId {
    KeyId::from_random((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes())
}

fn fixture(n: usize) -> Fixture {
    let signer = TokenSigner::from_seed("k1", [0x11; 32]);
    let mut store = MemStore::new();
    store
        .set_signing_keys(vec![SigningPub {
            kid: "k1".into(),
            key: signer.verifying_key().to_bytes(),
        }])
        .unwrap();
    let allowlist = policy::parse_models(&["llama3*", "qwen3:8b", "mistral"]).unwrap();
    let sample = n.min(SAMPLE);
    let stride = n / sample;
    let mut bearers = Vec::with_capacity(sample);
    let mut allowlisted = Vec::with_capacity(sample);
    for i in 0..n {
        let id = id_for(i);
        let mut secret = [0u8; 32];
        secret[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let key = ApiKey::generate(&id, secret);
        let models = if i % 2 == 1 {
            allowlist.clone()
        } else {
            Vec::new()
        };
        store.upsert(KeyRecord {
            id: id.as_str().to_owned(),
            name: format!("key-{i}"),
            kind: KeyKind::ApiKey,
            digest: key.digest().0,
            previous: None,
            status: KeyStatus::Active,
            expires_at: Some(NOW + 86_400),
            policy: Policy {
                routes: RouteSet::default_grant(),
                models,
                rate: None,
            },
        });
        if i % stride == 0 && bearers.len() < sample {
            bearers.push(format!("Bearer {}", key.expose_secret()));
        }
        if i % (2 * stride) == 1 {
            allowlisted.push(format!("Bearer {}", key.expose_secret()));
        }
    }
    assert_eq!(store.len(), n);
    let mut tokens = Vec::with_capacity(TOKENS);
    let mut cached = Vec::with_capacity(TOKENS);
    for t in 0..TOKENS {
        let sub = id_for(t * (n / TOKENS)).as_str().to_owned();
        let jti = format!("tok-{t}");
        let claims = Claims {
            iss: "keyd".into(),
            sub: sub.clone(),
            iat: NOW - 60,
            exp: NOW + 840,
            nbf: None,
            jti: jti.clone(),
            scope: vec!["inference".into(), "read".into()],
            models: vec![],
        };
        tokens.push(format!("Bearer {}", signer.mint(&claims)));
        cached.push((sub, jti, NOW + 840));
    }
    Fixture {
        store,
        bearers,
        allowlisted,
        tokens,
        cached,
    }
}

/// Round-robin over a list: a compare and a predictable branch per iteration.
struct Cycle<'a, T> {
    items: &'a [T],
    i: usize,
}

impl<'a, T> Cycle<'a, T> {
    fn new(items: &'a [T]) -> Self {
        assert!(!items.is_empty());
        Self { items, i: 0 }
    }
    fn next(&mut self) -> &'a T {
        self.i += 1;
        if self.i == self.items.len() {
            self.i = 0;
        }
        &self.items[self.i]
    }
}

fn request<'a>(
    method: &'a str,
    path: &'a str,
    auth: &'a str,
    body: Option<&'a [u8]>,
) -> RequestView<'a> {
    RequestView {
        method,
        path,
        authorization: Some(auth),
        x_api_key: None,
        content_encoding: None,
        body,
    }
}

fn bench(c: &mut Criterion) {
    let cfg = EngineConfig::default();
    let body: &[u8] =
        br#"{"model":"llama3.2","messages":[{"role":"user","content":"why is the sky blue?"}],"stream":true}"#;
    for &n in SIZES {
        let f = fixture(n);
        // Every fixture request is allowed: a benchmark of denials would measure nothing.
        for auth in f.bearers.iter().chain(&f.tokens) {
            verify::decide(
                &request("GET", "/api/tags", auth, None),
                &f.store,
                NOW,
                &cfg,
            )
            .unwrap();
        }
        for auth in &f.allowlisted {
            verify::decide(
                &request("POST", "/api/chat", auth, Some(body)),
                &f.store,
                NOW,
                &cfg,
            )
            .unwrap();
        }

        let mut g = c.benchmark_group("api_key");
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("read", n), &f, |b, f| {
            let mut cy = Cycle::new(&f.bearers);
            b.iter(|| {
                let auth = cy.next();
                let req = request("GET", "/api/tags", auth, None);
                black_box(verify::decide(black_box(&req), &f.store, NOW, &cfg))
            });
        });
        g.bench_with_input(BenchmarkId::new("chat_body", n), &f, |b, f| {
            let mut cy = Cycle::new(&f.allowlisted);
            b.iter(|| {
                let auth = cy.next();
                let req = request("POST", "/api/chat", auth, Some(body));
                black_box(verify::decide(black_box(&req), &f.store, NOW, &cfg))
            });
        });
        g.bench_with_input(BenchmarkId::new("headers_only", n), &f, |b, f| {
            let mut cy = Cycle::new(&f.bearers);
            b.iter(|| {
                let auth = cy.next();
                let cred = verify::extract_credential(Some(black_box(auth)), None);
                let p =
                    verify::authenticate(&cred, "GET", "/api/tags", &f.store, NOW, &cfg).unwrap();
                let route = routes::classify("GET", black_box("/api/tags"));
                black_box(verify::authorize_route(&p, &route, None))
            });
        });
        g.finish();

        let mut g = c.benchmark_group("token");
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("verify", n), &f, |b, f| {
            let mut cy = Cycle::new(&f.tokens);
            b.iter(|| {
                let auth = cy.next();
                let req = request("GET", "/api/tags", auth, None);
                black_box(verify::decide(black_box(&req), &f.store, NOW, &cfg))
            });
        });
        g.bench_with_input(BenchmarkId::new("cached", n), &f, |b, f| {
            let mut cy = Cycle::new(&f.cached);
            b.iter(|| {
                let (sub, jti, exp) = cy.next();
                let p = verify::principal_for_token(sub, jti, *exp, &f.store, NOW, &cfg).unwrap();
                let route = routes::classify("GET", black_box("/api/tags"));
                black_box(verify::authorize_route(&p, &route, None))
            });
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
