//! An empty proxy-wasm HTTP filter: the floor any wasm filter pays in Envoy.
//!
//! It reads one request header (`authorization`, like a real auth filter would) and lets
//! the request continue. What it costs per request over Envoy with no filter is the price
//! of crossing into the V8 wasm VM and back, which the keygate filter is measured against.
#![forbid(unsafe_code)]

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Empty))
    }
}

struct Empty;

impl Context for Empty {}

impl HttpContext for Empty {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // The one hostcall every auth filter makes. Its value is deliberately unused; the
        // Result-returning hostcall is used so an error can never panic the VM.
        let _ = proxy_wasm::hostcalls::get_map_value(
            proxy_wasm::types::MapType::HttpRequestHeaders,
            "authorization",
        );
        Action::Continue
    }
}
