//! keygate's Envoy filter (proxy-wasm). Filled in by the filter issue.
#![forbid(unsafe_code)]
