//! keygate-core: the pure logic shared by the Envoy filter (wasm32) and keyd (native).
//!
//! Key and token formats, the signed snapshot format, Ollama's route and model policy,
//! rate limiting state, and the decision engine. No I/O, no clock, no randomness: time
//! and random bytes are parameters, so everything here runs at full speed in `cargo test`
//! and behaves identically inside Envoy's V8 and inside keyd.
#![forbid(unsafe_code)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod apikey;
pub mod codec;
pub mod deny;
pub mod duration;
pub mod error;
pub mod model;
pub mod ollama_sig;
pub mod policy;
pub mod ratelimit;
pub mod routes;
pub mod snapshot;
pub mod token;
pub mod verify;

pub use ed25519_dalek;
pub use error::{Error, KeyReject, Result, SnapshotReject, TokenReject};
