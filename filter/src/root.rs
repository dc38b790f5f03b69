//! Per-VM state ([`Worker`]) and the proxy-wasm glue: the root context (configuration,
//! ticks, keyd responses) and the HTTP context (one per request), both delegating to
//! plain Rust written against [`Host`].

use crate::cache::VerifiedCache;
use crate::config::{Config, ConfigError};
use crate::host::{Host, Level, WasmHost};
use crate::http::{Request, Verdict};
use crate::keycache::{self, KeyCache};
use crate::shared::{self, View};
use crate::stats::Stats;
use crate::sync::{self, Sync};
use keygate_core::routes::ApiFlavor;
use keygate_core::verify::DenyReason;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::cell::RefCell;
use std::rc::Rc;

/// Everything one VM (one Envoy worker thread) holds. The key set is not here: it lives
/// once per Envoy in shared data.
#[derive(Debug)]
pub struct Worker {
    pub cfg: Rc<Config>,
    pub view: View,
    pub cache: VerifiedCache,
    /// Key records and token revocations read at the held version.
    pub keys: KeyCache,
    /// The plugin's VM id (shared queues are resolved by it).
    pub vm_id: String,
    /// This worker's shared queue, where others note changes ([`shared::notify_workers`]).
    pub queue: Option<u32>,
    /// When the latest lockout of any address ends, as last read (µs): until then every
    /// request's address is checked; after it, none is (no hostcall on the allow path).
    pub lockouts_until_us: u64,
    pub stats: Stats,
    pub sync: Sync,
}

impl Worker {
    pub fn configure<H: Host + ?Sized>(
        host: &H,
        bytes: Option<&[u8]>,
    ) -> Result<Self, ConfigError> {
        let cfg = Config::parse(bytes)?;
        let mut view = View::default();
        view.refresh(host);
        let worker = sync::claim_worker_id(host);
        let mut keys = KeyCache::new(keycache::DEFAULT_CAPACITY);
        keys.sync(view.version());
        let vm_id = host
            .property(&["plugin_vm_id"])
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        let queue = host.queue_register(&shared::queue_name(worker));
        shared::heartbeat(host, worker, host.now_us());
        let mut stats = Stats::default();
        stats.define(host);
        Ok(Self {
            cache: VerifiedCache::new(cfg.token_cache_size),
            cfg: Rc::new(cfg),
            view,
            keys,
            vm_id,
            queue,
            lockouts_until_us: shared::lockouts_until(host),
            stats,
            sync: Sync::new(worker),
        })
    }

    /// Re-reads what other workers may have changed: the snapshot version (the key cache
    /// follows it) and the lockout horizon.
    pub fn refresh<H: Host + ?Sized>(&mut self, host: &H) {
        self.view.refresh(host);
        self.keys.sync(self.view.version());
        self.lockouts_until_us = shared::lockouts_until(host);
    }

    /// Another worker wrote a new version or a lockout: drain the notes, re-read.
    pub fn on_queue_ready<H: Host + ?Sized>(&mut self, host: &H, queue: u32) {
        if Some(queue) != self.queue {
            return;
        }
        // Every note means "re-read", so a burst needs one refresh. The proxy calls this
        // once per note: later calls of a burst find the queue empty and do nothing.
        // Bounded, so a flood cannot hold the worker (the rest stays for its own calls).
        let mut notes = 0;
        while notes < 1024 && host.queue_dequeue(queue).is_some() {
            notes += 1;
        }
        if notes > 0 {
            self.refresh(host);
        }
    }

    /// Tells every worker (this one included) to re-read shared data.
    pub fn notify<H: Host + ?Sized>(&self, host: &H, now_us: u64) {
        shared::notify_workers(host, &self.vm_id, now_us);
    }

    /// The fail policy: 503 before the first good snapshot, and 503 once keyd has been
    /// unreachable for longer than `max_staleness`; otherwise the last good snapshot.
    pub fn readiness<H: Host + ?Sized>(&mut self, host: &H, now_us: u64) -> Result<(), DenyReason> {
        let max_staleness_us = self.cfg.max_staleness_us;
        let fresh = |v: &View| match &v.meta {
            None => Err(DenyReason::NoSnapshot),
            Some(m) if now_us.saturating_sub(m.last_ok_us) > max_staleness_us => {
                Err(DenyReason::StaleSnapshot)
            }
            Some(_) => Ok(()),
        };
        if fresh(&self.view).is_ok() {
            return Ok(());
        }
        // The tick may not have seen the latest kg:meta yet.
        self.refresh(host);
        fresh(&self.view)
    }

    pub fn on_tick<H: Host + ?Sized>(&mut self, host: &H) {
        self.sync.on_tick(host, &self.cfg, &mut self.stats);
        let now = host.now_us();
        shared::heartbeat(host, self.sync.worker(), now);
        self.after_sync(host, now);
        self.stats.flush(host);
    }

    pub fn on_call_response<H: Host + ?Sized>(&mut self, host: &H, token: u32, body_size: usize) {
        self.sync
            .on_response(host, &self.cfg, &mut self.stats, token, body_size);
        self.after_sync(host, host.now_us());
    }

    /// Re-reads shared data; when this worker's sync loop just made a new version current,
    /// tells the other workers.
    fn after_sync<H: Host + ?Sized>(&mut self, host: &H, now_us: u64) {
        self.refresh(host);
        if std::mem::take(&mut self.sync.applied) {
            self.notify(host, now_us);
        }
    }
}

/// The root context of one VM.
#[derive(Debug, Default)]
pub struct RootCtx {
    worker: Option<Rc<RefCell<Worker>>>,
}

impl Context for RootCtx {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let Some(w) = &self.worker {
            if let Ok(mut w) = w.try_borrow_mut() {
                w.on_call_response(&WasmHost, token_id, body_size);
            }
        }
    }
}

impl RootContext for RootCtx {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let host = WasmHost;
        match Worker::configure(&host, host.plugin_configuration().as_deref()) {
            Ok(w) => {
                self.worker = Some(Rc::new(RefCell::new(w)));
                host.set_tick_period_ms(sync::TICK_MS);
                true
            }
            Err(e) => {
                host.log(
                    Level::Error,
                    &format!("refusing the plugin configuration: {e}"),
                );
                false
            }
        }
    }

    fn on_tick(&mut self) {
        if let Some(w) = &self.worker {
            if let Ok(mut w) = w.try_borrow_mut() {
                w.on_tick(&WasmHost);
            }
        }
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        if let Some(w) = &self.worker {
            if let Ok(mut w) = w.try_borrow_mut() {
                w.on_queue_ready(&WasmHost, queue_id);
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(HttpCtx {
            worker: self.worker.clone(),
            req: Request::default(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One request's context.
#[derive(Debug)]
pub struct HttpCtx {
    worker: Option<Rc<RefCell<Worker>>>,
    req: Request,
}

impl Context for HttpCtx {}

fn action(v: Verdict) -> Action {
    match v {
        Verdict::Continue => Action::Continue,
        Verdict::Pause | Verdict::Responded => Action::Pause,
    }
}

/// Fail closed when the VM has no usable state (never configured, or re-entered).
fn unavailable() -> Action {
    let r = keygate_core::deny::render(ApiFlavor::Ollama, DenyReason::NoSnapshot);
    let headers: Vec<(&str, &str)> = r.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    WasmHost.send_response(r.status, &headers, r.body.as_bytes());
    Action::Pause
}

impl HttpContext for HttpCtx {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(w) = &self.worker else {
            return unavailable();
        };
        let Ok(mut w) = w.try_borrow_mut() else {
            return unavailable();
        };
        action(self.req.on_headers(&WasmHost, &mut w, end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(w) = &self.worker else {
            return Action::Pause;
        };
        let Ok(mut w) = w.try_borrow_mut() else {
            return unavailable();
        };
        action(
            self.req
                .on_body(&WasmHost, &mut w, body_size, end_of_stream),
        )
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        let Some(w) = &self.worker else {
            return Action::Pause;
        };
        let Ok(mut w) = w.try_borrow_mut() else {
            return unavailable();
        };
        action(self.req.on_trailers(&WasmHost, &mut w))
    }
}
