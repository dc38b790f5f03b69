//! keyd: keygate's key service. Issues, rotates and revokes keys; mints signed tokens;
//! publishes signed snapshots to filters (full, delta, long-poll); keeps a hash-chained
//! audit log; answers `/v1/verify` for nginx and Caddy. See docs/api.md for the contract.
#![forbid(unsafe_code)]

pub mod audit;
pub mod config;
pub mod error;
pub mod live;
pub mod metrics;
pub mod routes;
pub mod secrets;
pub mod state;
pub mod store;
pub mod timefmt;

use crate::state::AppState;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use std::future::Future;
use std::time::Duration;

pub use crate::error::{ApiError, Error, Result};

/// Largest admin request body.
const ADMIN_BODY_LIMIT: usize = 64 * 1024;
/// Largest body a proxy may pass to `/v1/verify` (for a body-level model check).
const VERIFY_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// The whole HTTP surface. Tests drive it in-process with `tower::ServiceExt::oneshot`.
pub fn app(state: AppState) -> Router {
    use routes::{audit, health, keys, snapshot, tokens, verify};
    let admin = Router::new()
        .route("/v1/keys", post(keys::issue).get(keys::list))
        .route("/v1/keys/{id}", get(keys::show))
        .route("/v1/keys/{id}/rotate", post(keys::rotate))
        .route("/v1/keys/{id}/revoke", post(keys::revoke))
        .route("/v1/keys/{id}/tokens", post(tokens::mint_for_key))
        .route(
            "/v1/public-keys",
            post(keys::register).get(keys::list_public_keys),
        )
        .route("/v1/audit", get(audit::list))
        .route("/v1/audit/verify", get(audit::verify))
        .route(
            "/v1/signing-keys/rotate",
            post(snapshot::rotate_signing_key),
        )
        .route(
            "/v1/filter-credentials",
            post(snapshot::create_filter_credential),
        )
        .route("/v1/token/exchange", post(tokens::exchange))
        .route("/v1/snapshot", get(snapshot::snapshot))
        .route("/v1/snapshot-keys", get(snapshot::snapshot_public_keys))
        .route("/.well-known/jwks.json", get(tokens::jwks))
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::metrics))
        .layer(DefaultBodyLimit::max(ADMIN_BODY_LIMIT));
    let verify = Router::new()
        .route(
            "/v1/verify",
            get(verify::verify)
                .post(verify::verify)
                .head(verify::verify),
        )
        .layer(DefaultBodyLimit::max(VERIFY_BODY_LIMIT));
    admin
        .merge(verify)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::track,
        ))
        .with_state(state)
}

/// Keeps the live state current with changes made by other keyd instances on the same
/// database: a periodic re-check always, and PostgreSQL `LISTEN` for immediate wake-ups.
pub fn spawn_background(state: &AppState) {
    let st = state.clone();
    let mut stop = state.shutting_down();
    tokio::spawn(async move {
        let mut tick =
            tokio::time::interval(st.cfg.recheck_interval.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            if let Err(e) = st.refresh().await {
                st.metrics
                    .refresh_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(error = %e, "periodic re-check of the database failed");
            }
        }
    });
    if state.cfg.is_postgres() {
        let st = state.clone();
        let mut stop = state.shutting_down();
        tokio::spawn(async move {
            loop {
                let listen = async {
                    let mut l = sqlx::postgres::PgListener::connect(st.cfg.db.as_str()).await?;
                    l.listen(store::NOTIFY_CHANNEL).await?;
                    loop {
                        l.recv().await?;
                        if let Err(e) = st.refresh().await {
                            tracing::warn!(error = %e, "reload after NOTIFY failed");
                        }
                    }
                    #[allow(unreachable_code)]
                    Ok::<(), sqlx::Error>(())
                };
                tokio::select! {
                    r = listen => {
                        if let Err(e) = r {
                            tracing::warn!(error = %e, "LISTEN connection lost; the periodic re-check covers until it is back");
                        }
                    }
                    _ = stop.wait_for(|s| *s) => break,
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        });
    }
}

/// Serves `state` on `listener` until `shutdown` resolves; then releases long-polls and
/// finishes in-flight requests.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    spawn_background(&state);
    let st = state.clone();
    let app = app(state);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: releasing long-polls, finishing in-flight requests");
        st.shutdown_tx.send_replace(true);
    })
    .await
}

/// `keyd audit-verify`: the chain check without a running server.
pub async fn audit_verify(url: &store::DbUrl) -> Result<audit::Verifier> {
    let store = store::Store::open(url).await?;
    let v = store.verify_audit().await;
    store.close().await;
    v
}
