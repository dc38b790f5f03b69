//! keyd's entry point: parse arguments, set up logging, run. Everything else is in the
//! library so tests can drive it.
#![forbid(unsafe_code)]

use anyhow::Context as _;
use clap::Parser as _;
use keyd::config::{Cli, Command, Config, LogFormat};
use std::io::Write as _;
use std::process::ExitCode;

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

async fn serve(args: keyd::config::ServeArgs) -> anyhow::Result<()> {
    let admin_token = std::env::var("KEYD_ADMIN_TOKEN").ok();
    let cfg = Config::from_args(&args, admin_token)?;
    init_logs(cfg.log_format);
    tracing::info!(database = %cfg.db.display(), "starting keyd");
    let listen = cfg.listen.clone();
    let started = keyd::state::AppState::open(cfg)
        .await
        .context("keyd could not open its database")?;
    if let Some(path) = &started.admin_token_file {
        tracing::info!(path = %path.display(), "generated an admin token and wrote it to this file (mode 0600)");
    }
    let public = started.state.snapshot_public_key();
    tracing::info!(snapshot_public_key = %public, "filters pin this snapshot public key");
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, version = started.state.version(), "keyd listening");
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "snapshot-public-key: {public}")?;
        writeln!(out, "listening: {addr}")?;
        out.flush()?;
    }
    let state = started.state.clone();
    keyd::serve(started.state, listener, shutdown_signal()).await?;
    state.store.close().await;
    tracing::info!("keyd stopped");
    Ok(())
}

async fn audit_verify(args: keyd::config::AuditVerifyArgs) -> anyhow::Result<bool> {
    let url = keyd::config::database_url(args.database.as_deref())?;
    let v = keyd::audit_verify(&url).await?;
    println!("{}", serde_json::to_string_pretty(&v.to_json())?);
    Ok(v.first_broken.is_none())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keyd: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.command {
        Command::Version => {
            println!("keyd {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Serve(args) => match rt.block_on(serve(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("keyd: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::AuditVerify(args) => match rt.block_on(audit_verify(args)) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => {
                eprintln!("keyd: the audit chain is broken (see first_broken)");
                ExitCode::from(3)
            }
            Err(e) => {
                eprintln!("keyd: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}
