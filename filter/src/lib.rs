//! keygate's Envoy filter (proxy-wasm): checks every request to Ollama inside Envoy
//! against keys synced from keyd.
//!
//! Layout: [`host`] is the only module that calls the proxy; [`root`] holds the
//! per-VM state and the proxy-wasm glue; [`http`] decides one request; [`sync`] keeps the
//! snapshot current (one loop per Envoy); [`shared`] is the shared-data layout;
//! [`cache`] the verified-token cache; [`keycache`] a worker's key records; [`stats`] the
//! Envoy metrics; [`config`] the plugin configuration.
#![forbid(unsafe_code)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod cache;
pub mod config;
pub mod host;
pub mod http;
pub mod keycache;
#[cfg(test)]
mod mock;
pub mod root;
pub mod shared;
pub mod stats;
pub mod sync;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::<root::RootCtx>::default()
    });
}}
