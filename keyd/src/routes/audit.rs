//! Reading and verifying the audit log.

use super::{Admin, QueryMap};
use crate::audit::action;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::AuditFilter;
use crate::timefmt::parse_rfc3339;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

/// `GET /v1/audit?since&until&key&action&limit&after`.
pub async fn list(
    State(st): State<AppState>,
    _: Admin,
    q: QueryMap,
) -> Result<Json<Value>, ApiError> {
    q.only(&["since", "until", "key", "action", "limit", "after"])?;
    let time = |k: &str| {
        q.get(k)
            .map(|v| {
                parse_rfc3339(v).ok_or_else(|| {
                    ApiError::invalid(
                        k,
                        format!("{k} must be an RFC 3339 time, e.g. 2026-11-23T09:00:00Z"),
                    )
                })
            })
            .transpose()
    };
    let limit = q
        .parse::<i64>("limit", "a number from 1 to 1000")?
        .unwrap_or(1000);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            "limit must be a number from 1 to 1000",
        ));
    }
    let after = q
        .parse::<i64>("after", "an audit sequence number")?
        .unwrap_or(0);
    let act = q.get("action");
    if let Some(a) = act {
        if !action::ALL.contains(&a) {
            return Err(ApiError::invalid(
                "action",
                format!("action must be one of {}", action::ALL.join(", ")),
            ));
        }
    }
    let key = q.get("key");
    if key.is_some_and(|k| k.len() > 64) {
        return Err(ApiError::invalid("key", "key must be a key id"));
    }
    let f = AuditFilter {
        since: time("since")?,
        until: time("until")?,
        key_id: key.map(str::to_owned),
        action: act.map(str::to_owned),
        after,
        limit,
    };
    let entries = st.store.audit_page(&f).await?;
    let next = (entries.len() as i64 == limit)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    let entries: Vec<Value> = entries.iter().map(crate::audit::Entry::to_json).collect();
    Ok(Json(json!({ "entries": entries, "next": next })))
}

/// `GET /v1/audit/verify`: walks the chain; reports the first broken link.
pub async fn verify(State(st): State<AppState>, _: Admin) -> Result<Json<Value>, ApiError> {
    let v = st.store.verify_audit().await?;
    Ok(Json(v.to_json()))
}
