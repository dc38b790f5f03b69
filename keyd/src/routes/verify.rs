//! `/v1/verify`: the decision for proxies that cannot run the wasm filter (nginx
//! `auth_request`, Caddy `forward_auth`). Same keygate-core engine, on the in-memory state:
//! no database read per call.
//!
//! The original request comes from `X-Original-Method`/`X-Original-URI` (nginx) or
//! `X-Forwarded-Method`/`X-Forwarded-Uri` (Caddy). Neither proxy passes the request body
//! to the auth call, so on routes that name a model in the body the decision is
//! route-level: allowed for keys without a model allowlist, denied
//! (`model_unverifiable`) for keys with one. When a proxy does pass the body, it is
//! checked like the filter checks it.

use super::client_addr;
use crate::state::AppState;
use crate::timefmt::{now, now_us};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keygate_core::deny;
use keygate_core::ratelimit;
use keygate_core::routes::{classify, ApiFlavor};
use keygate_core::verify::{self, DenyReason, Principal, RouteOutcome, Via};

fn header<'a>(h: &'a HeaderMap, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| h.get(*n).and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Header-safe text: printable ASCII kept, everything else percent-encoded.
fn header_text(s: &str) -> HeaderValue {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn denied(flavor: ApiFlavor, reason: DenyReason) -> Response {
    let d = deny::render(flavor, reason);
    let mut resp = Response::new(Body::from(d.body));
    *resp.status_mut() = StatusCode::from_u16(d.status).unwrap_or(StatusCode::FORBIDDEN);
    for (name, value) in d.headers {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::from_str(&value)) {
            resp.headers_mut().insert(n, v);
        }
    }
    resp
}

/// Route and model checks with the route-level fallback described in the module docs.
fn authorize(
    p: &Principal,
    method: &str,
    uri: &str,
    encoding: Option<&str>,
    body: &[u8],
    mount_prefix: &str,
) -> Result<(), DenyReason> {
    let route = classify(method, verify::route_path(uri, mount_prefix));
    match verify::authorize_route(p, &route, encoding)? {
        RouteOutcome::Allow => Ok(()),
        RouteOutcome::NeedBody if !body.is_empty() => verify::authorize_body(p, body),
        RouteOutcome::NeedBody if p.policy.models.is_empty() => Ok(()),
        RouteOutcome::NeedBody => Err(DenyReason::ModelUnverifiable),
    }
}

pub async fn verify(
    State(st): State<AppState>,
    ext: axum::http::Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (Some(method), Some(uri)) = (
        header(&headers, &["x-original-method", "x-forwarded-method"]),
        header(&headers, &["x-original-uri", "x-forwarded-uri"]),
    ) else {
        st.metrics
            .verify_decision("error", "missing_original_request");
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"error": {
                "code": "invalid_argument",
                "message": "send the original request as X-Original-Method and X-Original-URI \
                            (nginx) or X-Forwarded-Method and X-Forwarded-Uri (Caddy)",
            }})),
        )
            .into_response();
    };
    let flavor = classify(method, verify::route_path(uri, &st.engine.sig.mount_prefix)).flavor;
    let addr = client_addr(&ext, &headers);
    if let Some(retry_after_secs) = st.client_failures.blocked(&addr) {
        let reason = DenyReason::TooManyFailures { retry_after_secs };
        st.metrics.verify_decision("deny", reason.code());
        return denied(flavor, reason);
    }
    let cred = verify::extract_credential(
        header(&headers, &["authorization"]),
        header(&headers, &["x-api-key"]),
    );
    let encoding = header(&headers, &["content-encoding"]);
    let decision = match st.live.read() {
        Ok(live) => verify::authenticate(&cred, method, uri, &live.mem, now(), &st.engine)
            .and_then(|p| {
                authorize(
                    &p,
                    method,
                    uri,
                    encoding,
                    &body,
                    &st.engine.sig.mount_prefix,
                )
                .map(|()| p)
            }),
        Err(_) => Err(DenyReason::NoSnapshot),
    };
    let principal = match decision {
        Ok(p) => p,
        Err(reason) => {
            if reason.is_auth_failure() {
                st.client_failures.failed(&addr);
            }
            st.metrics.verify_decision("deny", reason.code());
            return denied(flavor, reason);
        }
    };
    if let Some(rate) = principal.policy.rate {
        let allowed = match st.rates.lock() {
            Ok(mut rates) => {
                let d = ratelimit::step(
                    rates.get(&principal.key_id).map(|s| s.as_slice()),
                    &rate,
                    now_us(),
                );
                if d.allowed {
                    rates.insert(principal.key_id.clone(), d.next_state);
                    Ok(())
                } else {
                    Err(d.retry_after_secs)
                }
            }
            Err(_) => Ok(()),
        };
        if let Err(retry_after_secs) = allowed {
            let reason = DenyReason::RateLimited { retry_after_secs };
            st.metrics.verify_decision("deny", reason.code());
            return denied(flavor, reason);
        }
    }
    st.metrics.verify_decision("allow", "ok");
    let mut resp = StatusCode::OK.into_response();
    let h = resp.headers_mut();
    h.insert("x-keygate-key-id", header_text(&principal.key_id));
    h.insert("x-keygate-key-name", header_text(&principal.name));
    h.insert(
        "x-keygate-via",
        HeaderValue::from_static(match principal.via {
            Via::ApiKey => "api_key",
            Via::Token => "token",
            Via::Signed => "signed",
        }),
    );
    if let Some(rate) = principal.policy.rate {
        h.insert("x-keygate-rate", header_text(&rate.spec.to_string()));
        h.insert(
            "x-keygate-burst",
            header_text(&rate.burst.get().to_string()),
        );
    }
    resp
}
