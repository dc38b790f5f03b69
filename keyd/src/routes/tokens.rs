//! Signed tokens: minted by the admin for a key, or exchanged by a client for its own API
//! key; and the JWKS that publishes the token-signing public keys.

use super::{client_addr, Admin, JsonBody};
use crate::audit::{action, actor, NewEntry};
use crate::error::ApiError;
use crate::routes::keys::status_of;
use crate::secrets;
use crate::state::AppState;
use crate::store::KeyRow;
use crate::timefmt::{now, rfc3339};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use keygate_core::apikey::KeyId;
use keygate_core::duration::Duration;
use keygate_core::policy::RouteSet;
use keygate_core::token::{jwk_for, Claims};
use keygate_core::verify::{self, Via};
use serde::Deserialize;
use serde_json::{json, Value};

/// Issuer claim of every token keyd mints.
pub const ISSUER: &str = "keyd";
const DEFAULT_TTL: i64 = 15 * 60;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenReq {
    ttl: Option<String>,
}

fn ttl_of(st: &AppState, req: &TokenReq) -> Result<i64, ApiError> {
    let max = st.cfg.token_max_ttl;
    let ttl = match req.ttl.as_deref() {
        Some(t) => Duration::parse(t)
            .map_err(|m| ApiError::invalid("ttl", m))?
            .secs_i64(),
        None => DEFAULT_TTL.min(max),
    };
    if ttl > max {
        return Err(ApiError::invalid(
            "ttl",
            format!(
                "ttl must be at most {} (keyd --token-max-ttl)",
                Duration::try_from_secs(u64::try_from(max).unwrap_or(0))
                    .map_or_else(|_| format!("{max}s"), |d| d.to_string())
            ),
        ));
    }
    Ok(ttl)
}

/// Mints a token for `row` inside an open write and records `audit_action`.
async fn mint(
    st: &AppState,
    row: &KeyRow,
    ttl: i64,
    audit_action: &'static str,
    audit_actor: &'static str,
) -> Result<Json<Value>, ApiError> {
    let signers = st.signers();
    let jti = secrets::new_jti()?;
    let mut w = st.begin(false).await?;
    let now = w.tx.now();
    let models: Vec<String> = serde_json::from_str(&row.models).unwrap_or_default();
    let claims = Claims {
        iss: ISSUER.into(),
        sub: row.id.clone(),
        iat: now,
        exp: now.saturating_add(ttl),
        nbf: None,
        jti: jti.clone(),
        scope: RouteSet::from_bits(u8::try_from(row.routes).unwrap_or(0))
            .names()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        models,
    };
    let token = signers.token.mint(&claims);
    w.tx.audit(NewEntry {
        action: audit_action,
        key_id: Some(row.id.clone()),
        actor: audit_actor,
        detail: json!({ "jti": jti, "kid": signers.token.kid, "exp": claims.exp, "ttl_secs": ttl }),
    })
    .await?;
    st.commit(w).await?;
    Ok(Json(json!({
        "token": token,
        "expires_at": rfc3339(claims.exp),
        "jti": jti,
    })))
}

pub async fn mint_for_key(
    State(st): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<TokenReq>,
) -> Result<Json<Value>, ApiError> {
    let not_found = || {
        ApiError::NotFound(format!(
            "key {} does not exist",
            id.chars().take(40).collect::<String>()
        ))
    };
    KeyId::parse(&id).map_err(|_| not_found())?;
    let ttl = ttl_of(&st, &req)?;
    let row = st.store.get_key(&id).await?.ok_or_else(not_found)?;
    match status_of(&row, now()) {
        "revoked" => return Err(ApiError::Conflict(format!("key {id} is revoked"))),
        "expired" => return Err(ApiError::Conflict(format!("key {id} has expired"))),
        _ => {}
    }
    mint(&st, &row, ttl, action::TOKEN_MINT, actor::ADMIN).await
}

/// A client trades its own valid API key for a short-lived token (no admin token).
pub async fn exchange(
    State(st): State<AppState>,
    ext: axum::http::Extensions,
    headers: HeaderMap,
    JsonBody(req): JsonBody<TokenReq>,
) -> Result<Json<Value>, ApiError> {
    let addr = client_addr(&ext, &headers);
    if let Some(retry_after) = st.client_failures.blocked(&addr) {
        return Err(ApiError::TooManyRequests { retry_after });
    }
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let cred = verify::extract_credential(auth, None);
    let decided = {
        let live = st
            .live
            .read()
            .map_err(|_| ApiError::Unavailable("keyd is not ready"))?;
        verify::authenticate(
            &cred,
            "POST",
            "/v1/token/exchange",
            &live.mem,
            now(),
            &st.engine,
        )
    };
    let principal = match decided {
        Ok(p) if p.via == Via::ApiKey => p,
        Ok(_) => {
            return Err(ApiError::Unauthenticated(
                "only an API key can be exchanged: send 'Authorization: Bearer <api key>'",
            ))
        }
        Err(reason) => {
            st.client_failures.failed(&addr);
            return Err(ApiError::Unauthenticated(reason.message()));
        }
    };
    let ttl = ttl_of(&st, &req)?;
    let row = st
        .store
        .get_key(&principal.key_id)
        .await?
        .ok_or(ApiError::Unauthenticated("invalid API key"))?;
    mint(&st, &row, ttl, action::TOKEN_EXCHANGE, actor::EXCHANGE).await
}

/// `GET /.well-known/jwks.json`: current and retained token-signing keys.
pub async fn jwks(State(st): State<AppState>) -> Json<Value> {
    let keys: Vec<Value> = st
        .signers()
        .published_token_keys(now(), st.cfg.signing_key_retention)
        .iter()
        .filter_map(|p| {
            keygate_core::ed25519_dalek::VerifyingKey::from_bytes(&p.key)
                .ok()
                .map(|k| jwk_for(&p.kid, &k))
        })
        .collect();
    Json(json!({ "keys": keys }))
}
