//! Denial responses, shaped for the client on the route: Ollama clients parse
//! `{"error": "…"}`, OpenAI SDKs parse `{"error": {"message", "type", "code"}}`.

use crate::routes::ApiFlavor;
use crate::verify::DenyReason;

/// A response a proxy sends instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

/// Renders `reason` for a client on a route of `flavor`.
pub fn render(flavor: ApiFlavor, reason: DenyReason) -> DenyResponse {
    let status = reason.status();
    let message = reason.message();
    let body = match flavor {
        ApiFlavor::Ollama => serde_json::json!({ "error": message }),
        ApiFlavor::OpenAi => serde_json::json!({
            "error": {
                "message": message,
                "type": openai_type(status),
                "code": reason.code(),
            }
        }),
    }
    .to_string();
    let mut headers = vec![("content-type", "application/json".to_owned())];
    if status == 401 {
        let error = match reason {
            DenyReason::NoCredential => String::new(),
            _ => ", error=\"invalid_token\"".to_owned(),
        };
        headers.push((
            "www-authenticate",
            format!("Bearer realm=\"keygate\"{error}"),
        ));
    }
    if let Some(secs) = reason.retry_after() {
        headers.push(("retry-after", secs.to_string()));
    }
    headers.push(("x-keygate-deny", reason.code().to_owned()));
    DenyResponse {
        status,
        headers,
        body,
    }
}

fn openai_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        503 => "server_error",
        _ => "invalid_request_error",
    }
}
