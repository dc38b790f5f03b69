//! What filters fetch: signed snapshots (full, delta, long-poll); the filter credentials
//! they authenticate with; and signing-key rotation.

use super::{Admin, Filter, JsonBody, QueryMap};
use crate::audit::{action, actor, NewEntry};
use crate::error::ApiError;
use crate::secrets;
use crate::state::{AppState, Encoded};
use crate::store::SigningKeyRow;
use crate::timefmt::now;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use keygate_core::codec::{b64url_encode, hex_encode};
use keygate_core::snapshot::{encode_public_key, fingerprint, SnapshotSigner};
use keygate_core::token::{kid_for, TokenSigner};
use serde::Deserialize;
use serde_json::{json, Value};

fn encoded_response(e: &Encoded) -> Response {
    let mut resp = Response::new(Body::from(e.bytes.clone()));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&e.version.to_string()) {
        h.insert("x-keygate-version", v);
    }
    h.insert(
        "x-keygate-snapshot-kind",
        HeaderValue::from_static(if e.base == 0 { "full" } else { "delta" }),
    );
    resp
}

fn not_modified(version: u64) -> Response {
    let mut resp = StatusCode::NOT_MODIFIED.into_response();
    if let Ok(v) = HeaderValue::from_str(&version.to_string()) {
        resp.headers_mut().insert("x-keygate-version", v);
    }
    resp
}

/// `GET /v1/snapshot?since=V&wait=SECS`.
pub async fn snapshot(
    State(st): State<AppState>,
    _: Filter,
    q: QueryMap,
) -> Result<Response, ApiError> {
    q.only(&["since", "wait"])?;
    let since = q
        .parse::<u64>("since", "a snapshot version (a whole number)")?
        .unwrap_or(0);
    let wait = q
        .parse::<u64>("wait", "a number of seconds")?
        .unwrap_or(0)
        .min(st.cfg.snapshot_wait_max);
    if since > st.version() {
        // Another keyd on the same database may be ahead of this one.
        st.refresh().await?;
    }
    if since != 0 && since == st.version() {
        if wait == 0 {
            return Ok(not_modified(since));
        }
        let _waiting = st.metrics.waiter();
        let mut changed = st.version_tx.subscribe();
        let mut shutdown = st.shutting_down();
        tokio::select! {
            r = changed.wait_for(|v| *v > since) => {
                if r.is_err() {
                    return Ok(not_modified(since));
                }
            }
            _ = tokio::time::sleep(std::time::Duration::from_secs(wait)) => {
                return Ok(not_modified(since));
            }
            _ = shutdown.wait_for(|s| *s) => {
                return Ok(not_modified(since));
            }
        }
    }
    if since != 0 {
        if let Some(d) = st.delta_snapshot(since) {
            return Ok(encoded_response(&d));
        }
    }
    let full = st.full_snapshot().await?;
    Ok(encoded_response(&full))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialReq {
    name: Option<String>,
}

fn snapshot_keys(st: &AppState) -> Vec<String> {
    st.signers()
        .published_snapshot_keys(now(), st.cfg.signing_key_retention)
        .iter()
        .map(encode_public_key)
        .collect()
}

/// `POST /v1/filter-credentials`: a credential for one filter, shown once, stored hashed.
pub async fn create_filter_credential(
    State(st): State<AppState>,
    _: Admin,
    JsonBody(req): JsonBody<CredentialReq>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let name = req.name.as_deref().map(str::trim).filter(|n| !n.is_empty());
    if let Some(n) = name {
        keygate_core::policy::validate_name(n).map_err(|m| ApiError::invalid("name", m))?;
    }
    let (id, text) = secrets::new_filter_credential()?;
    let mut w = st.begin(false).await?;
    w.tx.insert_filter_credential(&id, name, &secrets::sha256_hex(&text))
        .await?;
    w.tx.audit(NewEntry {
        action: action::FILTER_CREDENTIAL_CREATE,
        key_id: None,
        actor: actor::ADMIN,
        detail: json!({ "id": id, "name": name }),
    })
    .await?;
    st.commit(w).await?;
    tracing::info!(filter_credential = %id, "filter credential created");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": id,
            "credential": text,
            "snapshot_public_keys": snapshot_keys(&st),
        })),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateSigningReq {
    which: String,
}

/// `POST /v1/signing-keys/rotate`: a new current key; the old public key stays published
/// (JWKS, snapshots, `snapshot_public_keys`) for `--signing-key-retention`.
pub async fn rotate_signing_key(
    State(st): State<AppState>,
    _: Admin,
    JsonBody(req): JsonBody<RotateSigningReq>,
) -> Result<Json<Value>, ApiError> {
    let which = match req.which.as_str() {
        "token" => "token",
        "snapshot" => "snapshot",
        _ => {
            return Err(ApiError::invalid(
                "which",
                "which must be token or snapshot",
            ))
        }
    };
    let seed = secrets::random::<32>()?;
    let (kid, public) = if which == "token" {
        let vk = TokenSigner::from_seed("", seed).verifying_key();
        (kid_for(&vk), vk)
    } else {
        let vk = SnapshotSigner::from_seed(seed).verifying_key();
        (hex_encode(&fingerprint(&vk)), vk)
    };
    let mut w = st.begin(true).await?;
    let row = SigningKeyRow {
        kid: kid.clone(),
        which: which.to_owned(),
        seed: hex_encode(&seed),
        public_key: hex_encode(public.as_bytes()),
        created_at: w.tx.now(),
        retired_at: None,
        version: w.tx.version(),
    };
    w.tx.replace_signing_key(&row).await?;
    let public_b64 = b64url_encode(public.as_bytes());
    w.tx.audit(NewEntry {
        action: action::SIGNING_KEY_ROTATE,
        key_id: None,
        actor: actor::ADMIN,
        detail: json!({ "which": which, "kid": kid, "public_key": public_b64 }),
    })
    .await?;
    st.commit(w).await?;
    tracing::info!(which, kid, "signing key rotated");
    let mut body = json!({ "which": which, "public_key": public_b64 });
    if let Some(obj) = body.as_object_mut() {
        if which == "token" {
            obj.insert("kid".into(), kid.into());
        } else {
            obj.insert("snapshot_public_keys".into(), snapshot_keys(&st).into());
        }
    }
    Ok(Json(body))
}

/// `GET /v1/snapshot-keys` (public): the snapshot public keys a filter may pin, current
/// first. Public keys only; pin them from a trusted channel, not from this answer alone.
pub async fn snapshot_public_keys(State(st): State<AppState>) -> Json<Value> {
    Json(json!({ "keys": snapshot_keys(&st) }))
}
