//! Per-VM state ([`Worker`]) and the proxy-wasm glue: the root context (configuration,
//! ticks, keyd responses) and the HTTP context (one per request), both delegating to
//! plain Rust written against [`Host`].

use crate::cache::VerifiedCache;
use crate::config::{Config, ConfigError};
use crate::host::{Host, Level, WasmHost};
use crate::http::{Request, Verdict};
use crate::shared::View;
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
        Ok(Self {
            cache: VerifiedCache::new(cfg.token_cache_size),
            cfg: Rc::new(cfg),
            view,
            stats: Stats::default(),
            sync: Sync::new(sync::claim_worker_id(host)),
        })
    }

    /// The fail policy: 503 before the first good snapshot, and 503 once keyd has been
    /// unreachable for longer than `max_staleness`; otherwise the last good snapshot.
    pub fn readiness<H: Host + ?Sized>(&mut self, host: &H, now_us: u64) -> Result<(), DenyReason> {
        let fresh = |v: &View| match &v.meta {
            None => Err(DenyReason::NoSnapshot),
            Some(m) if now_us.saturating_sub(m.last_ok_us) > self.cfg.max_staleness_us => {
                Err(DenyReason::StaleSnapshot)
            }
            Some(_) => Ok(()),
        };
        if fresh(&self.view).is_ok() {
            return Ok(());
        }
        // The tick may not have seen the latest kg:meta yet.
        self.view.refresh(host);
        fresh(&self.view)
    }

    pub fn on_tick<H: Host + ?Sized>(&mut self, host: &H) {
        self.sync.on_tick(host, &self.cfg, &mut self.stats);
        self.view.refresh(host);
    }

    pub fn on_call_response<H: Host + ?Sized>(&mut self, host: &H, token: u32, body_size: usize) {
        self.sync
            .on_response(host, &self.cfg, &mut self.stats, token, body_size);
        self.view.refresh(host);
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
