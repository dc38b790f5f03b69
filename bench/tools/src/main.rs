//! `kgbench`: the benchmark runner's helper (bench/run.py drives it).
//!
//! ```text
//! kgbench keys   --dir DIR --count N [--seed S] [--export M]
//! kgbench tokens --dir DIR --count N [--seed S] [--ttl SECS] [--iss ISS]
//! kgbench serve  --dir DIR [--listen 127.0.0.1:0] [--port-file F]
//! ```
//!
//! Everything is deterministic from `--seed`, so the key the runner sends, the key in the
//! snapshot and the token signer in the JWKS always agree without passing secrets around.
#![forbid(unsafe_code)]

mod args;
mod error;
mod gen;
mod rng;
mod serve;

use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = argv.split_first() else {
        eprintln!("usage: kgbench keys|tokens|serve --dir DIR ... (see bench/README.md)");
        return ExitCode::from(2);
    };
    let result = args::Args::parse(rest).and_then(|a| match cmd.as_str() {
        "keys" => gen::keys(&a),
        "tokens" => gen::tokens(&a),
        "serve" => serve::serve(&a),
        other => Err(error::Error::Usage(format!(
            "unknown command {other:?}: use keys, tokens or serve"
        ))),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kgbench {cmd}: {e}");
            ExitCode::from(1)
        }
    }
}
