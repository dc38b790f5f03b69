//! Fast in-process checks through `keyd::app` with `tower::ServiceExt::oneshot` (no
//! process, no socket): routing, auth and error bodies.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use clap::Parser as _;
use http_body_util::BodyExt as _;
use keyd::config::{Cli, Command, Config};
use serde_json::Value;
use tower::ServiceExt as _;

const TOKEN: &str = "inprocess-admin-token-0123456789";

async fn state(dir: &std::path::Path) -> keyd::state::AppState {
    let url = format!("sqlite://{}", dir.join("k.db").display());
    let cli = Cli::try_parse_from(["keyd", "serve", "--database", &url]).unwrap();
    let Command::Serve(args) = cli.command else {
        panic!()
    };
    let cfg = Config::from_args(&args, Some(TOKEN.into())).unwrap();
    keyd::state::AppState::open(cfg).await.unwrap().state
}

async fn call(st: &keyd::state::AppState, req: Request<Body>) -> (StatusCode, Value) {
    let resp = keyd::app(st.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn issue_then_show_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path()).await;
    let (s, v) = call(&st, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"], "ok");
    let (s, v) = call(
        &st,
        Request::post("/v1/keys")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Body::from(r#"{"name":"in-process"}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let id = v["id"].as_str().unwrap().to_owned();
    let (s, v) = call(
        &st,
        Request::get(format!("/v1/keys/{id}"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["name"], "in-process");
    let (s, v) = call(
        &st,
        Request::get("/v1/keys")
            .header("authorization", "Bearer wrong")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"]["code"], "unauthenticated");
    // The state holds the key for /v1/verify without a database read.
    assert_eq!(st.live.read().unwrap().mem.len(), 1);
}

#[tokio::test]
async fn internal_errors_do_not_leak_and_verify_needs_no_database() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path()).await;
    let (s, v) = call(
        &st,
        Request::post("/v1/keys")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Body::from(r#"{"name":"cached"}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let key = v["key"].as_str().unwrap().to_owned();
    // From here on the database is gone.
    st.store.close().await;
    // /v1/verify decides from memory alone.
    let (s, _) = call(
        &st,
        Request::get("/v1/verify")
            .header("x-original-method", "GET")
            .header("x-original-uri", "/api/tags")
            .header("authorization", format!("Bearer {key}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // Health reports the lost database.
    let (s, v) = call(&st, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["status"], "unavailable");
    let (s, v) = call(
        &st,
        Request::get("/v1/keys")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(v["error"]["code"], "internal");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(!msg.contains("pool") && !msg.contains("sqlite"), "{msg}");
}
