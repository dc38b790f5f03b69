//! Decision cost per request, with 1,000 and 1,000,000 keys loaded.
//!
//! `cargo bench -p keygate-core --bench decision`
//!
//! Budget (DESIGN.md "Performance budget"): an API-key decision under 1 µs natively, and the
//! 1M-key figure within noise of the 1k one (key count changes memory, never per-request
//! time). Requests cycle through the same number of distinct keys (1,024, spread over the
//! whole store) whatever the number loaded; `read_cold_65536_keys` additionally cycles
//! through 65,536 keys of the 1M store, so the records no longer stay in cache: that figure
//! shows what memory costs when a very large key population is evenly active.
//!
//! * `api_key/read` — `verify::decide`, `GET /api/tags`, `Authorization: Bearer kg_…`.
//! * `api_key/chat_body` — `verify::decide`, `POST /api/chat` with a JSON body and a key
//!   with a model allowlist (body parse + normalisation + glob match).
//! * `api_key/read_cold_65536_keys` — as `read`, over 65,536 distinct keys (1M store).
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
/// Distinct keys in the hot set: the same working set whatever the number of keys loaded,
/// so a difference between the 1k and 1M figures is a per-request cost of the key count.
const HOT: usize = 1_024;
/// Distinct keys in the cold set (1M store only): enough that the store's records do not
/// stay in cache, as with a large, evenly active key population.
const COLD: usize = 65_536;

/// Request texts in one contiguous buffer, read in order: like headers that just arrived,
/// they are in cache, so only the store's own memory traffic is measured.
struct Texts {
    buf: String,
    ends: Vec<usize>,
}

impl Texts {
    fn new(items: impl Iterator<Item = String>) -> Self {
        let mut t = Texts {
            buf: String::new(),
            ends: Vec::new(),
        };
        for s in items {
            t.buf.push_str(&s);
            t.ends.push(t.buf.len());
        }
        assert!(!t.ends.is_empty());
        t
    }

    fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.buf[start..self.ends[i]]
    }
}

struct Fixture {
    store: MemStore,
    /// `Bearer <key>` for `HOT` keys spread over the store.
    hot: Texts,
    /// `Bearer <key>` for `COLD` keys spread over the store (1M store only).
    cold: Option<Texts>,
    /// `Bearer <key>` for `HOT` keys with a model allowlist.
    allowlisted: Texts,
    /// `Bearer <token>` for `HOT` tokens whose parent keys are spread over the store.
    tokens: Texts,
    /// (sub, jti, exp) of `tokens`, as a token cache holds them.
    cached: Vec<(String, String, i64)>,
}

fn id_for(i: usize) -> KeyId {
    KeyId::from_random((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes())
}

fn key_for(i: usize) -> ApiKey {
    let mut secret = [0u8; 32];
    secret[..8].copy_from_slice(&(i as u64).to_le_bytes());
    ApiKey::generate(&id_for(i), secret)
}

/// `count` indices spread evenly over `0..n`, all odd when `odd` (allowlisted keys).
fn spread(n: usize, count: usize, odd: bool) -> impl Iterator<Item = usize> {
    let count = count.min(if odd { n / 2 } else { n });
    let stride = n / count;
    (0..count).map(move |k| if odd { (k * stride) | 1 } else { k * stride })
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
    for i in 0..n {
        store.upsert(KeyRecord {
            id: id_for(i).as_str().to_owned(),
            name: format!("key-{i}"),
            kind: KeyKind::ApiKey,
            digest: key_for(i).digest().0,
            previous: None,
            status: KeyStatus::Active,
            expires_at: Some(NOW + 86_400),
            policy: Policy {
                routes: RouteSet::default_grant(),
                // Odd keys carry an allowlist (`chat_body`).
                models: if i % 2 == 1 {
                    allowlist.clone()
                } else {
                    Vec::new()
                },
                rate: None,
            },
        });
    }
    assert_eq!(store.len(), n);
    let bearer = |i: usize| format!("Bearer {}", key_for(i).expose_secret());
    let cached: Vec<(String, String, i64)> = spread(n, HOT, false)
        .map(|i| (id_for(i).as_str().to_owned(), format!("tok-{i}"), NOW + 840))
        .collect();
    let tokens = Texts::new(cached.iter().map(|(sub, jti, exp)| {
        let claims = Claims {
            iss: "keyd".into(),
            sub: sub.clone(),
            iat: NOW - 60,
            exp: *exp,
            nbf: None,
            jti: jti.clone(),
            scope: vec!["inference".into(), "read".into()],
            models: vec![],
        };
        format!("Bearer {}", signer.mint(&claims))
    }));
    Fixture {
        hot: Texts::new(spread(n, HOT, false).map(bearer)),
        cold: (n >= 10 * COLD).then(|| Texts::new(spread(n, COLD, false).map(bearer))),
        allowlisted: Texts::new(spread(n, HOT, true).map(bearer)),
        tokens,
        cached,
        store,
    }
}

/// Round-robin index: a compare and a predictable branch per iteration.
struct Cycle {
    len: usize,
    i: usize,
}

impl Cycle {
    fn new(len: usize) -> Self {
        assert!(len > 0);
        Self { len, i: 0 }
    }
    fn next(&mut self) -> usize {
        self.i += 1;
        if self.i == self.len {
            self.i = 0;
        }
        self.i
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

fn read(f: &Fixture, texts: &Texts, cfg: &EngineConfig, b: &mut criterion::Bencher<'_>) {
    let mut cy = Cycle::new(texts.ends.len());
    b.iter(|| {
        let req = request("GET", "/api/tags", texts.get(cy.next()), None);
        black_box(verify::decide(black_box(&req), &f.store, NOW, cfg))
    });
}

fn bench(c: &mut Criterion) {
    let cfg = EngineConfig::default();
    let body: &[u8] =
        br#"{"model":"llama3.2","messages":[{"role":"user","content":"why is the sky blue?"}],"stream":true}"#;
    for &n in SIZES {
        let f = fixture(n);
        // Every fixture request is allowed: a benchmark of denials would measure nothing.
        let all = |t: &'_ Texts| {
            (0..t.ends.len())
                .map(|i| t.get(i).to_owned())
                .collect::<Vec<_>>()
        };
        let mut allowed = all(&f.hot);
        allowed.extend(all(&f.tokens));
        allowed.extend(f.cold.as_ref().map(all).unwrap_or_default());
        for auth in &allowed {
            let req = request("GET", "/api/tags", auth, None);
            verify::decide(&req, &f.store, NOW, &cfg).unwrap();
        }
        for auth in all(&f.allowlisted) {
            let req = request("POST", "/api/chat", &auth, Some(body));
            verify::decide(&req, &f.store, NOW, &cfg).unwrap();
        }
        drop(allowed);

        let mut g = c.benchmark_group("api_key");
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("read", n), &f, |b, f| {
            read(f, &f.hot, &cfg, b)
        });
        g.bench_with_input(BenchmarkId::new("headers_only", n), &f, |b, f| {
            let mut cy = Cycle::new(f.hot.ends.len());
            b.iter(|| {
                let auth = f.hot.get(cy.next());
                let cred = verify::extract_credential(Some(black_box(auth)), None);
                let p =
                    verify::authenticate(&cred, "GET", "/api/tags", &f.store, NOW, &cfg).unwrap();
                let route = routes::classify("GET", black_box("/api/tags"));
                black_box(verify::authorize_route(&p, &route, None))
            });
        });
        g.bench_with_input(BenchmarkId::new("chat_body", n), &f, |b, f| {
            let mut cy = Cycle::new(f.allowlisted.ends.len());
            b.iter(|| {
                let req = request(
                    "POST",
                    "/api/chat",
                    f.allowlisted.get(cy.next()),
                    Some(body),
                );
                black_box(verify::decide(black_box(&req), &f.store, NOW, &cfg))
            });
        });
        if let Some(cold) = &f.cold {
            g.bench_with_input(BenchmarkId::new("read_cold_65536_keys", n), &f, |b, f| {
                read(f, cold, &cfg, b)
            });
        }
        g.finish();

        let mut g = c.benchmark_group("token");
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("verify", n), &f, |b, f| {
            read(f, &f.tokens, &cfg, b)
        });
        g.bench_with_input(BenchmarkId::new("cached", n), &f, |b, f| {
            let mut cy = Cycle::new(f.cached.len());
            b.iter(|| {
                let (sub, jti, exp) = &f.cached[cy.next()];
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
