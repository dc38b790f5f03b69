//! keyctl: the operator's CLI over keyd's admin API (docs/keyctl.md).
//!
//! `main` parses, validates, runs, and turns the outcome into one line on stderr and an
//! exit code per failure class, so scripts can branch on what went wrong.
#![forbid(unsafe_code)]

mod admin_token;
mod api;
mod args;
mod caddy;
mod certs;
mod client;
mod cmd;
mod deny_catalog;
mod envoy_config;
mod error;
mod nginx;
mod output;
mod proxy;
mod secret;

use clap::Parser;
use std::io::Write as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with 0; usage errors to stderr with 2. A closed
            // pipe while printing help is not worth reporting.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(error::exit::OTHER));
        }
    };
    let mut ctx = cmd::Context::new(cli.global);
    let result = cmd::Command::from_args(cli.command).and_then(|c| c.run(&mut ctx));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            // stderr may be closed too; there is nowhere left to report that.
            let _ = writeln!(std::io::stderr(), "keyctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
