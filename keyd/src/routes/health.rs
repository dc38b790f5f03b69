//! `/healthz` and `/metrics`.

use crate::state::AppState;
use crate::timefmt::now;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

/// Healthy when the database answers within 2 s: a proxy health check then steers filters
/// away from a keyd that lost its database.
pub async fn healthz(State(st): State<AppState>) -> impl IntoResponse {
    let db = tokio::time::timeout(std::time::Duration::from_secs(2), st.store.head()).await;
    match db {
        Ok(Ok(_)) => (
            StatusCode::OK,
            Json(json!({ "status": "ok", "version": st.version() })),
        ),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({ "status": "unavailable", "version": st.version(), "reason": "database unreachable" }),
            ),
        ),
    }
}

pub async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    let (counts, version) = match st.live.read() {
        Ok(l) => (l.counts(now()), l.version()),
        Err(_) => (Default::default(), 0),
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(counts, version),
    )
}
