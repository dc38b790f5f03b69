//! The hostcall probe: per request, one kind of operation `n` times, then continue.
//!
//! Plugin configuration: `<op> <n>` (for example `property 20`). Paired in the same run with
//! the same filter doing `none 0`, the added CPU per request divided by `n` is what one such
//! operation costs inside Envoy's V8 runtime: the profile behind the keygate filter's
//! hot-path budget (bench/hostcalls.py, BENCHMARKS.md).
#![forbid(unsafe_code)]

use keygate_core::apikey::{ApiKey, KeyId, ParsedKey};
use keygate_core::policy::Policy;
use keygate_core::routes::{self, RouteClass};
use keygate_core::snapshot::{KeyKind, KeyRecord, KeyStatus, MemStore, Payload, Snapshot};
use keygate_core::verify::{authenticate, extract_credential, Credential, EngineConfig};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, MetricType};
use sha2::{Digest as _, Sha256};
use std::cell::Cell;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    None,
    GetHeader,
    GetHeaders,
    Time,
    Property,
    SharedGet,
    SharedGetMissing,
    SharedGetEmpty,
    SharedSet,
    SetHeader,
    RemoveHeader,
    Metric,
    Sha256,
    ParseKey,
    Classify,
    Extract,
    Authenticate,
    Alloc,
    Required,
}

impl Op {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Self::None,
            "get_header" => Self::GetHeader,
            "get_headers" => Self::GetHeaders,
            "time" => Self::Time,
            "property" => Self::Property,
            "shared_get" => Self::SharedGet,
            "shared_get_missing" => Self::SharedGetMissing,
            "shared_get_empty" => Self::SharedGetEmpty,
            "shared_set" => Self::SharedSet,
            "set_header" => Self::SetHeader,
            "remove_header" => Self::RemoveHeader,
            "metric" => Self::Metric,
            "sha256" => Self::Sha256,
            "parse_key" => Self::ParseKey,
            "classify" => Self::Classify,
            "extract" => Self::Extract,
            "authenticate" => Self::Authenticate,
            "alloc" => Self::Alloc,
            "required" => Self::Required,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy)]
struct Plan {
    op: Op,
    n: u32,
    metric: u32,
}

struct Root {
    plan: Rc<Cell<Plan>>,
    fixture: Rc<Fixture>,
}

/// A key and a one-key store, for the keygate-core operations.
struct Fixture {
    key: String,
    bearer: String,
    store: MemStore,
}

impl Fixture {
    fn new() -> Self {
        let id = KeyId::from_random([3; 8]);
        let key = ApiKey::generate(&id, [4; 32]);
        let rec = KeyRecord {
            id: id.as_str().to_owned(),
            name: "probe".into(),
            kind: KeyKind::ApiKey,
            digest: key.digest().0,
            previous: None,
            status: KeyStatus::Active,
            expires_at: None,
            policy: Policy::default(),
        };
        let mut store = MemStore::new();
        let snap = Snapshot {
            version: 1,
            issued_at: 0,
            signing_keys: vec![],
            keys: vec![rec],
            revoked_tokens: vec![],
        };
        let _ = store.apply(Payload::Full(snap));
        Self {
            bearer: format!("Bearer {}", key.expose_secret()),
            key: key.expose_secret().to_owned(),
            store,
        }
    }
}

impl Default for Root {
    fn default() -> Self {
        Self {
            plan: Rc::new(Cell::new(Plan {
                op: Op::None,
                n: 0,
                metric: 0,
            })),
            fixture: Rc::new(Fixture::new()),
        }
    }
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let cfg =
            hostcalls::get_buffer(proxy_wasm::types::BufferType::PluginConfiguration, 0, 1024)
                .ok()
                .flatten()
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_default();
        let mut parts = cfg.split_whitespace();
        let op = parts.next().and_then(Op::parse);
        let n = parts.next().and_then(|n| n.parse().ok());
        let (Some(op), Some(n)) = (op, n) else {
            let _ = hostcalls::log(LogLevel::Error, "probe: configuration is `<op> <n>`");
            return false;
        };
        // A key record's size, as the keygate filter stores them.
        let _ = hostcalls::set_shared_data("probe:k", Some(&[7u8; 96]), None);
        let _ = hostcalls::set_shared_data("probe:empty", Some(&[]), None);
        let metric = hostcalls::define_metric(MetricType::Counter, "probe.count").unwrap_or(0);
        self.plan.set(Plan { op, n, metric });
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe {
            plan: self.plan.get(),
            fixture: self.fixture.clone(),
        }))
    }
}

struct Probe {
    plan: Plan,
    fixture: Rc<Fixture>,
}

impl Context for Probe {}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // Every probe reads the credential header once, like the empty filter.
        let auth = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "authorization")
            .ok()
            .flatten()
            .unwrap_or_default();
        let mut sink = 0usize;
        for i in 0..self.plan.n {
            sink = sink.wrapping_add(match self.plan.op {
                Op::None => 0,
                Op::GetHeader => {
                    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "authorization")
                        .ok()
                        .flatten()
                        .map_or(0, |v| v.len())
                }
                Op::GetHeaders => {
                    hostcalls::get_map_bytes(MapType::HttpRequestHeaders).map_or(0, |v| v.len())
                }
                Op::Time => hostcalls::get_current_time().map_or(0, |_| 1),
                Op::Property => hostcalls::get_property(vec!["source", "address"])
                    .ok()
                    .flatten()
                    .map_or(0, |v| v.len()),
                Op::SharedGet => hostcalls::get_shared_data("probe:k")
                    .ok()
                    .and_then(|(v, _)| v)
                    .map_or(0, |v| v.len()),
                Op::SharedGetMissing => hostcalls::get_shared_data("probe:missing")
                    .ok()
                    .and_then(|(v, _)| v)
                    .map_or(0, |v| v.len()),
                Op::SharedGetEmpty => hostcalls::get_shared_data("probe:empty")
                    .ok()
                    .and_then(|(v, _)| v)
                    .map_or(0, |v| v.len()),
                Op::SharedSet => {
                    hostcalls::set_shared_data("probe:rl", Some(&i.to_be_bytes()), None)
                        .map_or(0, |_| 1)
                }
                Op::SetHeader => {
                    hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-probe", Some("v"))
                        .map_or(0, |_| 1)
                }
                Op::RemoveHeader => {
                    hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-absent", None)
                        .map_or(0, |_| 1)
                }
                Op::Metric => hostcalls::increment_metric(self.plan.metric, 1).map_or(0, |_| 1),
                Op::ParseKey => ParsedKey::parse(&self.fixture.key).map_or(0, |k| k.id().len()),
                Op::Classify => {
                    usize::from(routes::classify("GET", "/api/tags").class == RouteClass::Read)
                }
                Op::Extract => match extract_credential(Some(&self.fixture.bearer), None) {
                    Credential::Secret(s) => s.len(),
                    _ => 0,
                },
                Op::Authenticate => {
                    let cred = extract_credential(Some(&self.fixture.bearer), None);
                    authenticate(
                        &cred,
                        "GET",
                        "/api/tags",
                        &self.fixture.store,
                        1,
                        &EngineConfig::default(),
                    )
                    .map_or(0, |p| p.key_id.len())
                }
                Op::Alloc => {
                    let v: Vec<u8> = Vec::with_capacity(32 + i as usize % 8);
                    std::hint::black_box(v).capacity()
                }
                Op::Required => {
                    // What every auth filter with keygate's contract must do on allow: read
                    // the request headers, strip the credential, name the key upstream.
                    let n = hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
                        .map_or(0, |v| v.len());
                    let _ = hostcalls::set_map_value(
                        MapType::HttpRequestHeaders,
                        "x-keygate-key-id",
                        Some("4f3k2mzq7abc"),
                    );
                    let _ = hostcalls::set_map_value(
                        MapType::HttpRequestHeaders,
                        "authorization",
                        None,
                    );
                    let _ = hostcalls::set_map_value(
                        MapType::HttpRequestHeaders,
                        "x-keygate-key-name",
                        Some("probe"),
                    );
                    n
                }
                Op::Sha256 => {
                    let mut h = Sha256::new();
                    h.update(&auth);
                    h.update(i.to_be_bytes());
                    usize::from(h.finalize()[0])
                }
            });
        }
        if sink == usize::MAX {
            let _ = hostcalls::log(LogLevel::Trace, "probe");
        }
        Action::Continue
    }
}
