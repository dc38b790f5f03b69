//! HTTP routes, and the extractors they share: admin and filter authentication, JSON
//! bodies and query strings that answer 400 naming the field.

pub mod audit;
pub mod health;
pub mod keys;
pub mod snapshot;
pub mod tokens;
pub mod verify;

use crate::audit::{action, actor, NewEntry};
use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::net::SocketAddr;

/// The `Bearer` value of `Authorization`, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, rest) = v.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|s| !s.is_empty())
}

/// The TCP peer, when the server was started with connect info (not in `oneshot` tests).
pub fn peer(parts_ext: &axum::http::Extensions) -> Option<SocketAddr> {
    parts_ext
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| *a)
}

/// The client address for failure backoff: the peer, or — only when the peer is on
/// loopback, i.e. a proxy on this machine — the address that proxy reports in `X-Real-IP`
/// or the last `X-Forwarded-For` hop (the one the proxy itself appended).
pub fn client_addr(ext: &axum::http::Extensions, headers: &HeaderMap) -> String {
    let peer = peer(ext);
    let trusted = peer.is_none_or(|p| p.ip().is_loopback());
    if trusted {
        let h = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        let reported = h("x-real-ip")
            .or_else(|| h("x-forwarded-for").and_then(|x| x.rsplit(',').next().map(str::trim)));
        if let Some(ip) = reported.and_then(|s| s.parse::<std::net::IpAddr>().ok()) {
            return ip.to_string();
        }
    }
    peer.map_or_else(|| "unknown".to_owned(), |p| p.ip().to_string())
}

/// Proof that the request carried the admin token.
#[derive(Debug)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let presented = bearer(&parts.headers);
        if presented.is_some_and(|t| st.is_admin_token(t)) {
            // The right token always works: backoff must not let a noisy neighbour on the
            // same address lock the operator out (a 256-bit token is not guessable anyway).
            return Ok(Admin);
        }
        let addr = client_addr(&parts.extensions, &parts.headers);
        if let Some(retry_after) = st.admin_failures.blocked(&addr) {
            // Locked out: refused without an audit write, so a flood cannot grow the log.
            return Err(ApiError::TooManyRequests { retry_after });
        }
        st.admin_failures.failed(&addr);
        let reason = if presented.is_some() {
            "invalid_token"
        } else {
            "missing_token"
        };
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
        tracing::warn!(remote = %addr, route, reason, "admin authentication failed");
        let mut w = st.begin(false).await?;
        w.tx.audit(NewEntry {
            action: action::ADMIN_AUTH_FAILED,
            key_id: None,
            actor: actor::ANONYMOUS,
            detail: serde_json::json!({
                "reason": reason,
                "remote": addr,
                "method": parts.method.as_str(),
                "route": route,
            }),
        })
        .await?;
        st.commit(w).await?;
        Err(ApiError::Unauthenticated(
            "missing or invalid admin token: send 'Authorization: Bearer <admin token>'",
        ))
    }
}

/// Proof that the request carried a valid filter credential.
#[derive(Debug)]
pub struct Filter;

impl FromRequestParts<AppState> for Filter {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let addr = client_addr(&parts.extensions, &parts.headers);
        if let Some(retry_after) = st.client_failures.blocked(&addr) {
            return Err(ApiError::TooManyRequests { retry_after });
        }
        if let Some(t) = bearer(&parts.headers) {
            if st.check_filter_credential(t).await? {
                return Ok(Filter);
            }
        }
        st.client_failures.failed(&addr);
        Err(ApiError::Unauthenticated(
            "missing or invalid filter credential: send 'Authorization: Bearer <filter credential>' \
             (create one with POST /v1/filter-credentials)",
        ))
    }
}

/// A JSON body that must deserialize into `T`; an empty body counts as `{}`. Errors
/// answer 400 naming the field (unknown fields are refused by `deny_unknown_fields`).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest("could not read the request body".into())
            }
        })?;
        let body: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        parse_json(body).map(JsonBody)
    }
}

/// Deserializes `body`, turning serde's error into a 400 that names the field.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::BadRequest(format!("request body is not valid JSON: {msg}"));
        }
        // serde names unknown and missing fields in backticks: `unknown field `x``.
        let named = msg
            .split('`')
            .nth(1)
            .filter(|_| msg.starts_with("unknown field") || msg.starts_with("missing field"));
        // serde_path_to_error's path already ends at an unknown field; for a missing
        // field it stops at the enclosing object.
        let field = match named {
            Some(f) if path == "." => f.chars().take(64).collect(),
            Some(f) if msg.starts_with("missing field") => {
                format!("{path}.{}", f.chars().take(64).collect::<String>())
            }
            _ if path == "." => "body".to_owned(),
            _ => path.chars().take(128).collect(),
        };
        ApiError::invalid(field, msg)
    })
}

/// Query parameters, checked against the names a route accepts.
#[derive(Debug)]
pub struct QueryMap(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryMap {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(pairs) =
            axum::extract::Query::<Vec<(String, String)>>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::BadRequest("malformed query string".into()))?;
        Ok(QueryMap(pairs.into_iter().collect()))
    }
}

impl QueryMap {
    /// Refuses parameters not in `allowed`.
    pub fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(ApiError::invalid(
                k.chars().take(64).collect::<String>(),
                format!("unknown query parameter; accepted: {}", allowed.join(", ")),
            )),
            None => Ok(()),
        }
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|s| !s.is_empty())
    }

    pub fn parse<T: std::str::FromStr>(&self, k: &str, what: &str) -> Result<Option<T>, ApiError> {
        self.get(k)
            .map(|v| {
                v.parse::<T>()
                    .map_err(|_| ApiError::invalid(k, format!("{k} must be {what}")))
            })
            .transpose()
    }
}

/// Counts every answer by route template and status for `/metrics`, and logs it at debug
/// (route template only: paths can carry ids, never secrets, but templates keep logs short).
pub async fn track(
    axum::extract::State(st): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = req.method().clone();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    st.metrics.request(&route, status);
    tracing::debug!(%method, route, status, elapsed_ms = started.elapsed().as_millis() as u64, "request");
    resp
}
