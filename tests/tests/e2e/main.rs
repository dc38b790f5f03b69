//! keygate end to end: real Envoy (V8, `--concurrency 2`) with the keygate filter, real keyd
//! and keyctl, the fake Ollama, and the real Python clients.

mod clients;
mod cluster;
mod envoy_config;
mod fixtures;
mod keys;
mod lifecycle;
mod ollama_signed;
mod snapshot_source;
mod stack;
mod tls;
