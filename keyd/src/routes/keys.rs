//! Keys: issue, list, show, rotate, revoke; and registered Ollama public keys, which are
//! keys of kind `ollama_key` (listed, shown and revoked through the same routes).

use super::{Admin, JsonBody, QueryMap};
use crate::audit::{action, actor, NewEntry};
use crate::error::ApiError;
use crate::live::{KIND_API_KEY, KIND_OLLAMA_KEY};
use crate::secrets;
use crate::state::AppState;
use crate::store::KeyRow;
use crate::timefmt::{now, rfc3339_opt};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use keygate_core::apikey::KeyId;
use keygate_core::codec::{hex_decode, hex_encode};
use keygate_core::duration::Duration;
use keygate_core::ollama_sig;
use keygate_core::policy::{self, RouteSet};
use keygate_core::ratelimit::{Burst, RateSpec};
use serde::Deserialize;
use serde_json::{json, Value};

/// Longest revoke reason.
const MAX_REASON_LEN: usize = 512;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueReq {
    name: String,
    routes: Option<Vec<String>>,
    models: Option<Vec<String>>,
    rate: Option<String>,
    burst: Option<u32>,
    expires_in: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterReq {
    name: String,
    public_key: String,
    routes: Option<Vec<String>>,
    models: Option<Vec<String>>,
    rate: Option<String>,
    burst: Option<u32>,
    expires_in: Option<String>,
}

/// Policy fields after validation.
#[derive(Debug)]
struct ValidPolicy {
    name: String,
    routes: RouteSet,
    models: Vec<String>,
    rate: Option<String>,
    burst: Option<u32>,
    expires_at: Option<i64>,
}

fn validate(
    name: &str,
    routes: Option<&[String]>,
    models: Option<&[String]>,
    rate: Option<&str>,
    burst: Option<u32>,
    expires_in: Option<&str>,
) -> Result<ValidPolicy, ApiError> {
    policy::validate_name(name).map_err(|m| ApiError::invalid("name", m))?;
    let routes = match routes {
        Some(r) => RouteSet::parse_list(r).map_err(|m| ApiError::invalid("routes", m))?,
        None => RouteSet::default_grant(),
    };
    let models = models.unwrap_or(&[]);
    let globs = policy::parse_models(models).map_err(|m| ApiError::invalid("models", m))?;
    let rate = rate
        .map(|r| RateSpec::parse(r).map_err(|m| ApiError::invalid("rate", m)))
        .transpose()?;
    if let Some(b) = burst {
        if rate.is_none() {
            return Err(ApiError::invalid(
                "burst",
                "burst needs a rate (e.g. \"rate\": \"10/s\")",
            ));
        }
        Burst::try_new(b).map_err(|m| ApiError::invalid("burst", m))?;
    }
    let expires_at = expires_in
        .map(|d| {
            Duration::parse(d)
                .map(|d| now().saturating_add(d.secs_i64()))
                .map_err(|m| ApiError::invalid("expires_in", m))
        })
        .transpose()?;
    Ok(ValidPolicy {
        name: name.trim().to_owned(),
        routes,
        models: globs.iter().map(|g| g.as_str().to_owned()).collect(),
        rate: rate.map(|r| r.to_string()),
        burst,
        expires_at,
    })
}

/// `active`, `revoked` or `expired` at `now`.
pub fn status_of(k: &KeyRow, now: i64) -> &'static str {
    if k.status == "revoked" {
        "revoked"
    } else if k.expires_at.is_some_and(|t| t <= now) {
        "expired"
    } else {
        "active"
    }
}

/// The contract's Key object.
pub fn key_json(k: &KeyRow, now: i64) -> Value {
    let models: Vec<String> = serde_json::from_str(&k.models).unwrap_or_default();
    let routes = RouteSet::from_bits(u8::try_from(k.routes).unwrap_or(0)).names();
    let mut v = json!({
        "id": k.id,
        "kind": k.kind,
        "name": k.name,
        "status": status_of(k, now),
        "routes": routes,
        "models": models,
        "rate": k.rate,
        "burst": k.burst,
        "expires_at": rfc3339_opt(k.expires_at),
        "created_at": rfc3339_opt(Some(k.created_at)),
        "rotated_at": rfc3339_opt(k.rotated_at),
        "old_valid_until": rfc3339_opt(k.prev_valid_until),
        "revoked_at": rfc3339_opt(k.revoked_at),
        "revoke_reason": k.revoke_reason,
    });
    if k.kind == KIND_OLLAMA_KEY {
        if let (Some(pk), Some(obj)) = (hex_decode::<32>(&k.digest), v.as_object_mut()) {
            obj.insert("public_key".into(), authorized_key_line(&pk).into());
        }
    }
    v
}

/// `ssh-ed25519 <base64 wire blob>` for a raw Ed25519 public key.
fn authorized_key_line(pk: &[u8; 32]) -> String {
    use base64::Engine as _;
    let mut blob = Vec::with_capacity(51);
    blob.extend_from_slice(&11u32.to_be_bytes());
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&32u32.to_be_bytes());
    blob.extend_from_slice(pk);
    format!(
        "ssh-ed25519 {}",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}

fn policy_detail(p: &ValidPolicy, kind: &str) -> Value {
    json!({
        "name": p.name,
        "kind": kind,
        "routes": p.routes.names(),
        "models": p.models,
        "rate": p.rate,
        "burst": p.burst,
        "expires_at": p.expires_at,
    })
}

fn new_row(id: String, kind: &str, digest: String, p: &ValidPolicy, now: i64) -> KeyRow {
    KeyRow {
        id,
        kind: kind.to_owned(),
        name: p.name.clone(),
        digest,
        prev_digest: None,
        prev_valid_until: None,
        status: "active".into(),
        routes: i64::from(p.routes.bits()),
        models: serde_json::to_string(&p.models).unwrap_or_else(|_| "[]".into()),
        rate: p.rate.clone(),
        burst: p.burst.map(i64::from),
        expires_at: p.expires_at,
        created_at: now,
        rotated_at: None,
        revoked_at: None,
        revoke_reason: None,
        version: 0,
    }
}

pub async fn issue(
    State(st): State<AppState>,
    _: Admin,
    JsonBody(req): JsonBody<IssueReq>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let p = validate(
        &req.name,
        req.routes.as_deref(),
        req.models.as_deref(),
        req.rate.as_deref(),
        req.burst,
        req.expires_in.as_deref(),
    )?;
    // Ids are 60 random bits: a collision is possible in principle, so retry on one.
    for attempt in 0..3 {
        let key = secrets::new_api_key()?;
        let mut w = st.begin(true).await?;
        let row = new_row(
            key.id().to_string(),
            KIND_API_KEY,
            key.digest().to_hex(),
            &p,
            w.tx.now(),
        );
        match w.tx.insert_key(&row).await {
            Err(e) if e.is_unique_violation() && attempt < 2 => continue,
            Err(e) => return Err(e.into()),
            Ok(()) => {}
        }
        w.tx.audit(NewEntry {
            action: action::KEY_ISSUE,
            key_id: Some(row.id.clone()),
            actor: actor::ADMIN,
            detail: policy_detail(&p, KIND_API_KEY),
        })
        .await?;
        let now = w.tx.now();
        st.commit(w).await?;
        tracing::info!(key_id = %row.id, "key issued");
        let mut body = key_json(&row, now);
        if let Some(obj) = body.as_object_mut() {
            obj.insert("key".into(), key.expose_secret().into());
        }
        return Ok((StatusCode::CREATED, Json(body)));
    }
    Err(ApiError::Conflict(
        "could not allocate a key id: retry".into(),
    ))
}

pub async fn register(
    State(st): State<AppState>,
    _: Admin,
    JsonBody(req): JsonBody<RegisterReq>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let p = validate(
        &req.name,
        req.routes.as_deref(),
        req.models.as_deref(),
        req.rate.as_deref(),
        req.burst,
        req.expires_in.as_deref(),
    )?;
    let bad = || {
        ApiError::invalid(
            "public_key",
            "public_key must be an ssh-ed25519 public key line, e.g. the content of \
             ~/.ollama/id_ed25519.pub",
        )
    };
    if req.public_key.len() > 1024 {
        return Err(bad());
    }
    let pk = ollama_sig::parse_authorized_key(&req.public_key).map_err(|_| bad())?;
    keygate_core::ed25519_dalek::VerifyingKey::from_bytes(&pk).map_err(|_| bad())?;
    let id = ollama_sig::key_id_for(&pk);
    let mut w = st.begin(true).await?;
    if w.tx.get_key(&id).await?.is_some() {
        return Err(ApiError::Conflict(format!(
            "this public key is already registered as key {id}"
        )));
    }
    let row = new_row(id.clone(), KIND_OLLAMA_KEY, hex_encode(&pk), &p, w.tx.now());
    w.tx.insert_key(&row).await?;
    w.tx.audit(NewEntry {
        action: action::PUBLICKEY_REGISTER,
        key_id: Some(id.clone()),
        actor: actor::ADMIN,
        detail: policy_detail(&p, KIND_OLLAMA_KEY),
    })
    .await?;
    let now = w.tx.now();
    st.commit(w).await?;
    tracing::info!(key_id = %id, "public key registered");
    Ok((StatusCode::CREATED, Json(key_json(&row, now))))
}

fn valid_id(id: &str) -> Result<(), ApiError> {
    KeyId::parse(id).map(|_| ()).map_err(|_| {
        ApiError::NotFound(format!(
            "key {} does not exist",
            id.chars().take(40).collect::<String>()
        ))
    })
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("key {id} does not exist"))
}

async fn list_kind(
    st: &AppState,
    q: &QueryMap,
    kind: Option<&str>,
) -> Result<Json<Value>, ApiError> {
    q.only(&["all", "limit", "after", "kind"])?;
    let all = q.parse::<bool>("all", "true or false")?.unwrap_or(false);
    let limit = q
        .parse::<i64>("limit", "a number from 1 to 1000")?
        .unwrap_or(1000);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            "limit must be a number from 1 to 1000",
        ));
    }
    let kind = match (kind, q.get("kind")) {
        (Some(k), _) => Some(k),
        (None, Some(k)) if k == KIND_API_KEY || k == KIND_OLLAMA_KEY => Some(k),
        (None, Some(_)) => {
            return Err(ApiError::invalid(
                "kind",
                "kind must be api_key or ollama_key",
            ))
        }
        (None, None) => None,
    };
    let now = now();
    let rows = st
        .store
        .list_keys(q.get("after"), limit, (!all).then_some(now), kind)
        .await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id.clone()))
        .flatten();
    let keys: Vec<Value> = rows.iter().map(|r| key_json(r, now)).collect();
    Ok(Json(json!({ "keys": keys, "next": next })))
}

pub async fn list(
    State(st): State<AppState>,
    _: Admin,
    q: QueryMap,
) -> Result<Json<Value>, ApiError> {
    list_kind(&st, &q, None).await
}

pub async fn list_public_keys(
    State(st): State<AppState>,
    _: Admin,
    q: QueryMap,
) -> Result<Json<Value>, ApiError> {
    list_kind(&st, &q, Some(KIND_OLLAMA_KEY)).await
}

pub async fn show(
    State(st): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    valid_id(&id)?;
    let row = st.store.get_key(&id).await?.ok_or_else(|| not_found(&id))?;
    Ok(Json(key_json(&row, now())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateReq {
    grace: Option<String>,
}

pub async fn rotate(
    State(st): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<RotateReq>,
) -> Result<Json<Value>, ApiError> {
    valid_id(&id)?;
    let grace = match req.grace.as_deref() {
        None => 3600,
        Some(g) => Duration::parse(g)
            .map_err(|m| {
                if m == "duration must be positive" {
                    ApiError::invalid(
                        "grace",
                        "grace must be positive: to stop the old secret at once, revoke the key",
                    )
                } else {
                    ApiError::invalid("grace", m)
                }
            })?
            .secs_i64(),
    };
    let mut w = st.begin(true).await?;
    let row = w.tx.get_key(&id).await?.ok_or_else(|| not_found(&id))?;
    if row.kind != KIND_API_KEY {
        return Err(ApiError::Conflict(format!(
            "key {id} is a registered public key and has no secret to rotate: register a new public key instead"
        )));
    }
    match status_of(&row, w.tx.now()) {
        "revoked" => return Err(ApiError::Conflict(format!("key {id} is revoked"))),
        "expired" => return Err(ApiError::Conflict(format!("key {id} has expired"))),
        _ => {}
    }
    let parsed = KeyId::parse(&id).map_err(|_| not_found(&id))?;
    let key = keygate_core::apikey::ApiKey::generate(&parsed, secrets::random::<32>()?);
    let valid_until = w.tx.now().saturating_add(grace);
    w.tx.rotate_key(&id, &key.digest().to_hex(), &row.digest, valid_until)
        .await?;
    w.tx.audit(NewEntry {
        action: action::KEY_ROTATE,
        key_id: Some(id.clone()),
        actor: actor::ADMIN,
        detail: json!({ "grace_secs": grace, "old_valid_until": valid_until }),
    })
    .await?;
    st.commit(w).await?;
    tracing::info!(key_id = %id, "key rotated");
    Ok(Json(json!({
        "id": id,
        "key": key.expose_secret(),
        "old_valid_until": crate::timefmt::rfc3339(valid_until),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeReq {
    reason: Option<String>,
}

pub async fn revoke(
    State(st): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<RevokeReq>,
) -> Result<Json<Value>, ApiError> {
    valid_id(&id)?;
    let reason = req
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    if let Some(r) = reason {
        if r.len() > MAX_REASON_LEN {
            return Err(ApiError::invalid(
                "reason",
                "reason must be at most 512 bytes",
            ));
        }
        if r.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                "reason",
                "reason must not contain control characters",
            ));
        }
    }
    let mut w = st.begin(true).await?;
    let row = w.tx.get_key(&id).await?.ok_or_else(|| not_found(&id))?;
    if !w.tx.revoke_key(&id, reason).await? {
        return Err(ApiError::Conflict(format!(
            "key {id} is already {}",
            if row.status == "revoked" {
                "revoked"
            } else {
                "inactive"
            }
        )));
    }
    w.tx.audit(NewEntry {
        action: action::KEY_REVOKE,
        key_id: Some(id.clone()),
        actor: actor::ADMIN,
        detail: json!({ "reason": reason, "kind": row.kind }),
    })
    .await?;
    st.commit(w).await?;
    tracing::info!(key_id = %id, "key revoked");
    Ok(Json(json!({ "id": id, "status": "revoked" })))
}
