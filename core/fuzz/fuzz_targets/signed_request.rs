//! Ollama signed requests: Authorization value, method, path with query, clock and mount
//! prefix all attacker- or operator-controlled.
#![no_main]
use keygate_core::ollama_sig::{self, SigOptions};

libfuzzer_sys::fuzz_target!(|input: (&str, &str, &str, i64, i64, String)| {
    let (header, method, path, now, window_secs, mount_prefix) = input;
    let _ = ollama_sig::verify(
        header,
        method,
        path,
        now,
        &SigOptions {
            window_secs,
            mount_prefix,
        },
    );
    let _ = ollama_sig::strip_ts(path);
});
