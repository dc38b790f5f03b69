//! End-to-end harness: starts real processes (Envoy, keyd, the fake Ollama) on loopback
//! ports chosen at run time, kills them on drop, and offers the small clients the tests
//! drive them with.
//!
//! Programs are found from the environment first (`ENVOY_BIN`, `KEYD_BIN`, `KEYCTL_BIN`,
//! `KEYGATE_PYTHON`, `KEYGATE_WASM`), then where `scripts/setup.sh` puts them. A missing
//! program fails the test when `CI` is set, and skips it (printing why) otherwise.

pub mod envoy;
#[path = "../../cli/src/envoy_config.rs"]
pub mod envoy_config;
pub mod fake_keyd;
pub mod fake_ollama;
pub mod http;
pub mod keyd;
pub mod pg;
pub mod proc;
pub mod signer;
pub mod tools;
