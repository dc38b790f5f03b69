//! A mock proxy for native tests: shared data with Envoy's CAS semantics (shared between
//! mock "workers"), request headers and body, local replies, HTTP calls, metrics, logs.
//! Plus fixtures: a snapshot signer, keys, tokens and Ollama-signed requests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use crate::host::{Host, Level, MetricKind, SetError, SharedValue};
use crate::root::Worker;
use keygate_core::apikey::{ApiKey, KeyId};
use keygate_core::ed25519_dalek::{Signer as _, SigningKey};
use keygate_core::policy::Policy;
use keygate_core::snapshot::{
    encode_public_key, KeyKind, KeyRecord, KeyStatus, SigningPub, Snapshot, SnapshotSigner,
};
use keygate_core::token::{Claims, TokenSigner};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// Envoy's shared data: value plus a CAS counter bumped on every write.
#[derive(Debug, Default)]
pub struct SharedMap {
    pub map: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
    pub writes: usize,
    /// Shared queues by name: id and pending messages (delivered by [`deliver`]).
    pub queues: HashMap<String, (u32, std::collections::VecDeque<Vec<u8>>)>,
}

/// An HTTP call the filter started: cluster, headers, timeout in ms.
pub type Call = (String, Vec<(String, String)>, u64);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
pub struct MockHost {
    pub shared: Rc<RefCell<SharedMap>>,
    pub now_us: Cell<u64>,
    pub headers: RefCell<Vec<(String, Vec<u8>)>>,
    pub body: RefCell<Vec<u8>>,
    pub reply: RefCell<Option<Reply>>,
    pub properties: RefCell<HashMap<String, Vec<u8>>>,
    pub calls: RefCell<Vec<Call>>,
    pub next_token: Cell<u32>,
    pub call_headers: RefCell<Vec<(String, Vec<u8>)>>,
    pub call_body: RefCell<Vec<u8>>,
    pub metric_names: RefCell<Vec<(MetricKind, String)>>,
    pub metrics: RefCell<HashMap<u32, i64>>,
    pub logs: RefCell<Vec<String>>,
    pub fail_calls: Cell<bool>,
    /// Number of `Host` calls made (each is a hostcall in the real proxy).
    pub hostcalls: Cell<usize>,
}

impl MockHost {
    /// A second worker of the same Envoy: same shared data, everything else its own.
    pub fn sibling(&self) -> Self {
        let h = Self {
            shared: self.shared.clone(),
            ..Self::default()
        };
        h.now_us.set(self.now_us.get());
        h
    }

    pub fn set_now(&self, secs: i64) {
        self.now_us.set(u64::try_from(secs).unwrap() * 1_000_000);
    }

    pub fn advance_ms(&self, ms: u64) {
        self.now_us.set(self.now_us.get() + ms * 1000);
    }

    /// Starts a new request with these headers (lowercase names; `:method`, `:path`).
    pub fn request(&self, headers: &[(&str, &str)], body: &[u8]) {
        *self.headers.borrow_mut() = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect();
        *self.body.borrow_mut() = body.to_vec();
        *self.reply.borrow_mut() = None;
        self.properties.borrow_mut().clear();
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .borrow()
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
    }

    pub fn take_reply(&self) -> Option<Reply> {
        self.reply.borrow_mut().take()
    }

    pub fn metric(&self, name: &str) -> i64 {
        let names = self.metric_names.borrow();
        let Some(idx) = names.iter().position(|(_, n)| n == name) else {
            return 0;
        };
        self.metrics
            .borrow()
            .get(&u32::try_from(idx).unwrap())
            .copied()
            .unwrap_or(0)
    }

    /// Sets the answer the next `on_response` will read.
    pub fn answer(&self, status: u16, body: &[u8]) {
        *self.call_headers.borrow_mut() = vec![(":status".into(), status.to_string().into_bytes())];
        *self.call_body.borrow_mut() = body.to_vec();
    }
}

impl Host for MockHost {
    fn now_us(&self) -> u64 {
        self.hostcalls.set(self.hostcalls.get() + 1);
        self.now_us.get()
    }

    fn log(&self, _level: Level, msg: &str) {
        self.hostcalls.set(self.hostcalls.get() + 1);
        self.logs.borrow_mut().push(msg.to_owned());
    }

    fn shared_get(&self, key: &str) -> SharedValue {
        self.hostcalls.set(self.hostcalls.get() + 1);
        match self.shared.borrow().map.get(key) {
            Some((v, cas)) => SharedValue {
                value: Some(v.clone()),
                cas: Some(*cas),
            },
            None => SharedValue::default(),
        }
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        self.hostcalls.set(self.hostcalls.get() + 1);
        let mut s = self.shared.borrow_mut();
        if let (Some(cas), Some((_, cur))) = (cas, s.map.get(key)) {
            if cas != *cur {
                return Err(SetError::CasMismatch);
            }
        }
        s.next_cas += 1;
        let c = s.next_cas;
        s.writes += 1;
        s.map.insert(key.to_owned(), (value.to_vec(), c));
        Ok(())
    }

    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        self.hostcalls.set(self.hostcalls.get() + 1);
        self.headers
            .borrow()
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    fn request_headers(&self) -> Vec<(String, Vec<u8>)> {
        self.hostcalls.set(self.hostcalls.get() + 1);
        self.headers.borrow().clone()
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        self.hostcalls.set(self.hostcalls.get() + 1);
        let mut h = self.headers.borrow_mut();
        h.retain(|(k, _)| k != name);
        if let Some(v) = value {
            h.push((name.to_owned(), v.as_bytes().to_vec()));
        }
    }

    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        self.hostcalls.set(self.hostcalls.get() + 1);
        let b = self.body.borrow();
        Some(b[..size.min(b.len())].to_vec())
    }

    fn send_response(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        self.hostcalls.set(self.hostcalls.get() + 1);
        assert!(self.reply.borrow().is_none(), "two replies to one request");
        *self.reply.borrow_mut() = Some(Reply {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: String::from_utf8(body.to_vec()).unwrap(),
        });
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.hostcalls.set(self.hostcalls.get() + 1);
        self.properties.borrow().get(&path.join(".")).cloned()
    }

    fn set_property(&self, path: &[&str], value: &[u8]) {
        self.hostcalls.set(self.hostcalls.get() + 1);
        self.properties
            .borrow_mut()
            .insert(path.join("."), value.to_vec());
    }

    fn http_call(&self, cluster: &str, headers: &[(&str, &str)], timeout_ms: u64) -> Option<u32> {
        self.hostcalls.set(self.hostcalls.get() + 1);
        if self.fail_calls.get() {
            return None;
        }
        self.calls.borrow_mut().push((
            cluster.to_owned(),
            headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            timeout_ms,
        ));
        self.next_token.set(self.next_token.get() + 1);
        Some(self.next_token.get())
    }

    fn call_response_header(&self, name: &str) -> Option<Vec<u8>> {
        self.hostcalls.set(self.hostcalls.get() + 1);
        self.call_headers
            .borrow()
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    fn call_response_body(&self, size: usize) -> Option<Vec<u8>> {
        self.hostcalls.set(self.hostcalls.get() + 1);
        let b = self.call_body.borrow();
        Some(b[..size.min(b.len())].to_vec())
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        self.hostcalls.set(self.hostcalls.get() + 1);
        let mut names = self.metric_names.borrow_mut();
        if let Some(i) = names.iter().position(|(_, n)| n == name) {
            return u32::try_from(i).ok();
        }
        names.push((kind, name.to_owned()));
        u32::try_from(names.len() - 1).ok()
    }

    fn increment_metric(&self, id: u32, delta: i64) {
        self.hostcalls.set(self.hostcalls.get() + 1);
        *self.metrics.borrow_mut().entry(id).or_default() += delta;
    }

    fn record_metric(&self, id: u32, value: u64) {
        self.hostcalls.set(self.hostcalls.get() + 1);
        self.metrics
            .borrow_mut()
            .insert(id, i64::try_from(value).unwrap());
    }

    fn queue_register(&self, name: &str) -> Option<u32> {
        self.hostcalls.set(self.hostcalls.get() + 1);
        let mut s = self.shared.borrow_mut();
        let next = u32::try_from(s.queues.len()).unwrap() + 1;
        Some(
            s.queues
                .entry(name.to_owned())
                .or_insert((next, Default::default()))
                .0,
        )
    }

    fn queue_resolve(&self, _vm_id: &str, name: &str) -> Option<u32> {
        self.hostcalls.set(self.hostcalls.get() + 1);
        self.shared.borrow().queues.get(name).map(|q| q.0)
    }

    fn queue_enqueue(&self, id: u32, data: &[u8]) -> bool {
        self.hostcalls.set(self.hostcalls.get() + 1);
        let mut s = self.shared.borrow_mut();
        match s.queues.values_mut().find(|q| q.0 == id) {
            Some(q) => {
                q.1.push_back(data.to_vec());
                true
            }
            None => false,
        }
    }

    fn queue_dequeue(&self, id: u32) -> Option<Vec<u8>> {
        self.hostcalls.set(self.hostcalls.get() + 1);
        let mut s = self.shared.borrow_mut();
        s.queues.values_mut().find(|q| q.0 == id)?.1.pop_front()
    }

    fn set_tick_period_ms(&self, _ms: u64) {}

    fn plugin_configuration(&self) -> Option<Vec<u8>> {
        self.hostcalls.set(self.hostcalls.get() + 1);
        None
    }
}

/// Test time: 2026-01-01.
pub const NOW: i64 = 1_767_225_600;

pub fn snapshot_signer() -> SnapshotSigner {
    SnapshotSigner::from_seed([7; 32])
}

pub fn token_signer() -> TokenSigner {
    TokenSigner::from_seed("t1", [9; 32])
}

pub fn config_json(extra: &str) -> String {
    let k = encode_public_key(&snapshot_signer().verifying_key());
    format!(
        r#"{{"snapshot_public_keys":["{k}"],"filter_credential":"kgf_test_credential","keyd_cluster":"keyd","upstream_host":"127.0.0.1:11434"{extra}}}"#
    )
}

pub fn api_key(n: u8) -> (ApiKey, KeyRecord) {
    let id = KeyId::from_random([n; 8]);
    let key = ApiKey::generate(&id, [n.wrapping_add(100); 32]);
    let rec = KeyRecord {
        id: id.as_str().to_owned(),
        name: format!("key {n}"),
        kind: KeyKind::ApiKey,
        digest: key.digest().0,
        previous: None,
        status: KeyStatus::Active,
        expires_at: None,
        policy: Policy::default(),
    };
    (key, rec)
}

pub fn token_for(rec: &KeyRecord, jti: &str, iat: i64, exp: i64) -> String {
    token_signer().mint(&Claims {
        iss: "keyd".into(),
        sub: rec.id.clone(),
        iat,
        exp,
        nbf: None,
        jti: jti.into(),
        scope: vec!["inference".into(), "read".into()],
        models: vec![],
    })
}

/// An Ollama client key and its registered record.
pub fn ollama_key(n: u8) -> (SigningKey, KeyRecord) {
    let sk = SigningKey::from_bytes(&[n; 32]);
    let pk = sk.verifying_key().to_bytes();
    let rec = KeyRecord {
        id: keygate_core::ollama_sig::key_id_for(&pk),
        name: format!("laptop {n}"),
        kind: KeyKind::OllamaKey,
        digest: pk,
        previous: None,
        status: KeyStatus::Active,
        expires_at: None,
        policy: Policy::default(),
    };
    (sk, rec)
}

/// `Authorization` value exactly as the ollama CLI builds it.
pub fn ollama_sign(sk: &SigningKey, method: &str, path: &str, ts: i64) -> String {
    use base64::Engine as _;
    let mut blob = Vec::new();
    blob.extend_from_slice(&11u32.to_be_bytes());
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&32u32.to_be_bytes());
    blob.extend_from_slice(sk.verifying_key().as_bytes());
    let sig = sk.sign(format!("{method},{path}?ts={ts}").as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD;
    format!("{}:{}", b64.encode(blob), b64.encode(sig.to_bytes()))
}

pub fn snapshot(version: u64, keys: Vec<KeyRecord>) -> Snapshot {
    let mut s = Snapshot {
        version,
        issued_at: NOW,
        signing_keys: vec![SigningPub {
            kid: "t1".into(),
            key: token_signer().verifying_key().to_bytes(),
        }],
        keys,
        revoked_tokens: vec![],
    };
    s.canonicalize();
    s
}

/// A configured worker on `host` whose shared data holds `snap`.
/// Delivers what was enqueued for `w`, as the proxy would on the worker's thread.
pub fn deliver(host: &MockHost, w: &mut Worker) {
    if let Some(id) = w.queue {
        let pending = host
            .shared
            .borrow()
            .queues
            .values()
            .any(|q| q.0 == id && !q.1.is_empty());
        if pending {
            w.on_queue_ready(host, id);
        }
    }
}

pub fn worker_with(host: &MockHost, extra: &str, snap: &Snapshot) -> Worker {
    host.set_now(NOW);
    let bytes = snapshot_signer().sign_full(snap);
    let payload =
        keygate_core::snapshot::decode(&bytes, &[snapshot_signer().verifying_key()], usize::MAX)
            .unwrap();
    crate::shared::apply(host, payload, host.now_us()).unwrap();
    Worker::configure(host, Some(config_json(extra).as_bytes())).unwrap()
}
