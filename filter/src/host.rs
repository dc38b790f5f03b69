//! The only place that talks to the proxy: the [`Host`] trait and its proxy-wasm
//! implementation [`WasmHost`].
//!
//! Everything else in the filter is written against [`Host`], so it runs natively in
//! `cargo test` against a mock. [`WasmHost`] calls only the `proxy_wasm::hostcalls`
//! functions that return `Result` and turns every error into `None`/`Err`: the SDK's
//! default trait methods `unwrap`, and a panic kills the VM for every request on that
//! worker. Header values are read as bytes (the SDK's `String` getters unwrap on
//! non-UTF-8 values, which any client can send).

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType, Status};
use std::time::{Duration, UNIX_EPOCH};

/// Log severity, mapped onto the proxy's levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// A shared-data read: the value (absent or empty means "no entry") and its CAS token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedValue {
    pub value: Option<Vec<u8>>,
    pub cas: Option<u32>,
}

impl SharedValue {
    /// The value when present and non-empty (an empty value is how entries are deleted:
    /// proxy-wasm ABI 0.2.1 has no removal call).
    pub fn bytes(&self) -> Option<&[u8]> {
        self.value.as_deref().filter(|v| !v.is_empty())
    }
}

/// Why a shared-data write did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetError {
    /// Another worker wrote the entry since it was read: re-read and retry.
    CasMismatch,
    Failed,
}

/// Which kind of metric to define.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

/// What the filter needs from the proxy. Methods never panic; failures read as absent.
pub trait Host {
    /// Wall-clock time in microseconds since the Unix epoch.
    fn now_us(&self) -> u64;
    fn log(&self, level: Level, msg: &str);

    fn shared_get(&self, key: &str) -> SharedValue;
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError>;

    /// One request header's value as bytes.
    fn request_header(&self, name: &str) -> Option<Vec<u8>>;
    /// Every request header (lowercase names), in one hostcall: cheaper than several
    /// [`Host::request_header`] calls when a request needs more than one header.
    fn request_headers(&self) -> Vec<(String, Vec<u8>)>;
    /// Sets (or with `None` removes) a request header.
    fn set_request_header(&self, name: &str, value: Option<&str>);
    /// The buffered request body, up to `size` bytes.
    fn request_body(&self, size: usize) -> Option<Vec<u8>>;
    /// Answers the request from the filter; nothing is forwarded upstream.
    fn send_response(&self, status: u16, headers: &[(&str, &str)], body: &[u8]);

    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    fn set_property(&self, path: &[&str], value: &[u8]);

    /// Starts an HTTP call to `cluster`; returns its token.
    fn http_call(&self, cluster: &str, headers: &[(&str, &str)], timeout_ms: u64) -> Option<u32>;
    /// A header of the HTTP call response being delivered (e.g. `:status`).
    fn call_response_header(&self, name: &str) -> Option<Vec<u8>>;
    fn call_response_body(&self, size: usize) -> Option<Vec<u8>>;

    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32>;
    fn increment_metric(&self, id: u32, delta: i64);
    fn record_metric(&self, id: u32, value: u64);

    /// Registers this VM's shared queue `name`; the proxy calls the root context's
    /// `on_queue_ready` on this worker's thread when anything is enqueued.
    fn queue_register(&self, name: &str) -> Option<u32>;
    /// Finds the queue another VM of plugin VM `vm_id` registered as `name`.
    fn queue_resolve(&self, vm_id: &str, name: &str) -> Option<u32>;
    fn queue_enqueue(&self, id: u32, data: &[u8]) -> bool;
    fn queue_dequeue(&self, id: u32) -> Option<Vec<u8>>;

    fn set_tick_period_ms(&self, ms: u64);
    fn plugin_configuration(&self) -> Option<Vec<u8>>;
}

/// The real proxy, through `proxy_wasm::hostcalls`.
#[derive(Debug, Clone, Copy, Default)]
pub struct WasmHost;

impl Host for WasmHost {
    fn now_us(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }

    fn log(&self, level: Level, msg: &str) {
        let level = match level {
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        let _ = hostcalls::log(level, msg);
    }

    fn shared_get(&self, key: &str) -> SharedValue {
        match hostcalls::get_shared_data(key) {
            Ok((value, cas)) => SharedValue { value, cas },
            Err(_) => SharedValue::default(),
        }
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        hostcalls::set_shared_data(key, Some(value), cas).map_err(|s| match s {
            Status::CasMismatch => SetError::CasMismatch,
            _ => SetError::Failed,
        })
    }

    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten()
    }

    fn request_headers(&self) -> Vec<(String, Vec<u8>)> {
        hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default()
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
    }

    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size)
            .ok()
            .flatten()
    }

    fn send_response(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        let _ = hostcalls::send_http_response(u32::from(status), headers.to_vec(), Some(body));
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        hostcalls::get_property(path.to_vec()).ok().flatten()
    }

    fn set_property(&self, path: &[&str], value: &[u8]) {
        let _ = hostcalls::set_property(path.to_vec(), Some(value));
    }

    fn http_call(&self, cluster: &str, headers: &[(&str, &str)], timeout_ms: u64) -> Option<u32> {
        hostcalls::dispatch_http_call(
            cluster,
            headers.to_vec(),
            None,
            Vec::new(),
            Duration::from_millis(timeout_ms),
        )
        .ok()
    }

    fn call_response_header(&self, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, name)
            .ok()
            .flatten()
    }

    fn call_response_body(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, size)
            .ok()
            .flatten()
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        let kind = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
        };
        hostcalls::define_metric(kind, name).ok()
    }

    fn increment_metric(&self, id: u32, delta: i64) {
        let _ = hostcalls::increment_metric(id, delta);
    }

    fn record_metric(&self, id: u32, value: u64) {
        let _ = hostcalls::record_metric(id, value);
    }

    fn queue_register(&self, name: &str) -> Option<u32> {
        hostcalls::register_shared_queue(name).ok()
    }

    fn queue_resolve(&self, vm_id: &str, name: &str) -> Option<u32> {
        hostcalls::resolve_shared_queue(vm_id, name).ok().flatten()
    }

    fn queue_enqueue(&self, id: u32, data: &[u8]) -> bool {
        hostcalls::enqueue_shared_queue(id, Some(data)).is_ok()
    }

    fn queue_dequeue(&self, id: u32) -> Option<Vec<u8>> {
        hostcalls::dequeue_shared_queue(id).ok().flatten()
    }

    fn set_tick_period_ms(&self, ms: u64) {
        let _ = hostcalls::set_tick_period(Duration::from_millis(ms));
    }

    fn plugin_configuration(&self) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
    }
}
