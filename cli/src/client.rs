//! keyd's admin API over HTTP (docs/api.md). This module maps transport failures and keyd's
//! error bodies onto keyctl's failure classes; callers get typed answers or an [`Error`]
//! whose message says what to do.

use crate::error::{Error, Result};
use crate::secret::Secret;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A validated keyd base URL (`http://host:port`, optionally with a path prefix).
#[derive(Debug, Clone)]
pub struct BaseUrl(String);

impl BaseUrl {
    pub fn parse(flag: &str, s: &str) -> Result<Self> {
        if !s.contains("://") {
            return Err(Error::invalid(
                flag,
                "needs a scheme and host, e.g. http://127.0.0.1:7433",
            ));
        }
        let url = Url::parse(s.trim()).map_err(|e| {
            Error::invalid(
                flag,
                format!("not a URL ({e}): use e.g. http://127.0.0.1:7433"),
            )
        })?;
        if url.scheme() != "http" {
            return Err(Error::invalid(
                flag,
                "keyctl speaks plain HTTP to keyd (keyd listens on loopback); use http://HOST:PORT, \
                 or an SSH tunnel to reach a remote keyd",
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(Error::invalid(flag, "the URL has no host"));
        }
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err(Error::invalid(
                flag,
                "the URL must not carry a query, fragment or user",
            ));
        }
        Ok(Self(url.as_str().trim_end_matches('/').to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn join(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }
}

/// keyd's error body: `{"error": {"code", "message", "field"?}}`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    field: Option<String>,
}

/// An authenticated connection to keyd's admin API.
#[derive(Debug)]
pub struct Keyd {
    http: Client,
    base: BaseUrl,
    token: Secret,
}

impl Keyd {
    pub fn new(base: BaseUrl, token: Secret) -> Result<Self> {
        let http = Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .user_agent(concat!("keyctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Other(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Self { http, base, token })
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T> {
        let req = self.http.get(self.base.join(path)).query(query);
        self.send(req)
    }

    pub fn post<T: DeserializeOwned, B: Serialize>(&self, path: &str, body: &B) -> Result<T> {
        let req = self.http.post(self.base.join(path)).json(body);
        self.send(req)
    }

    fn send<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T> {
        let resp = req
            .bearer_auth(self.token.expose())
            .send()
            .map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        if status.is_success() {
            let bytes = read_body(resp).map_err(|e| self.transport_error(&e))?;
            return serde_json::from_slice(&bytes).map_err(|e| {
                Error::Keyd(format!(
                    "keyd at {} answered with JSON keyctl cannot read ({e}); is --url pointing \
                     at keyd, and are keyd and keyctl the same version?",
                    self.base.as_str()
                ))
            });
        }
        let bytes = read_body(resp).unwrap_or_default();
        Err(status_error(status, &bytes, self.base.as_str()))
    }

    fn transport_error(&self, e: &reqwest::Error) -> Error {
        if e.is_connect() || e.is_timeout() || e.is_request() {
            return Error::Unreachable {
                url: self.base.as_str().to_owned(),
                reason: root_cause(e),
            };
        }
        Error::Keyd(format!(
            "talking to keyd at {} failed ({}); check keyd's log",
            self.base.as_str(),
            root_cause(e)
        ))
    }
}

fn read_body(resp: Response) -> reqwest::Result<Vec<u8>> {
    resp.bytes().map(|b| b.to_vec())
}

/// The innermost cause, which names the real problem ("Connection refused").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    one_line(&cur.to_string())
}

/// keyd's messages are shown to the operator: one line, bounded, no control characters.
fn one_line(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    if s.chars().count() > 300 {
        out.push('…');
    }
    out
}

/// Maps a non-2xx answer onto a failure class.
fn status_error(status: StatusCode, body: &[u8], base: &str) -> Error {
    let detail = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|b| b.error);
    let message = detail
        .as_ref()
        .map(|d| one_line(&d.message))
        .filter(|m| !m.is_empty());
    let code = detail.as_ref().map(|d| d.code.as_str()).unwrap_or("");
    let msg = message.clone().unwrap_or_else(|| format!("HTTP {status}"));
    match status.as_u16() {
        400 | 413 => {
            let field = detail
                .as_ref()
                .and_then(|d| d.field.as_deref())
                .map(|f| format!(" (field {})", one_line(f)))
                .unwrap_or_default();
            Error::Rejected(format!("{msg}{field}"))
        }
        401 | 403 => Error::Unauthenticated(format!(
            "keyd rejected the admin token ({msg}): use the token keyd created at its first \
             start, via --admin-token-file FILE or KEYD_ADMIN_TOKEN"
        )),
        404 if code == "not_found" || message.is_some() => {
            Error::NotFound(format!("{msg}; 'keyctl list --all' shows every key id"))
        }
        404 => Error::Keyd(format!(
            "keyd at {base} has no such endpoint (HTTP 404): is --url pointing at keyd, and is \
             keyd up to date?"
        )),
        409 => Error::Conflict(msg),
        429 => Error::Keyd(format!(
            "keyd is rate limiting this client ({msg}): retry later"
        )),
        503 => Error::Keyd(format!("keyd is not ready ({msg}): retry shortly")),
        _ => Error::Keyd(format!(
            "keyd failed ({msg}, HTTP {}): see keyd's log",
            status.as_u16()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(status: u16, body: &str) -> Error {
        status_error(
            StatusCode::from_u16(status).unwrap(),
            body.as_bytes(),
            "http://k",
        )
    }

    #[test]
    fn statuses_map_to_classes() {
        let nf = r#"{"error":{"code":"not_found","message":"key abc does not exist"}}"#;
        assert_eq!(err(404, nf).exit_code(), 5);
        assert!(err(404, nf).to_string().contains("key abc does not exist"));
        assert_eq!(err(404, "not json").exit_code(), 1);
        let bad = r#"{"error":{"code":"invalid_argument","message":"bad ttl","field":"ttl"}}"#;
        assert_eq!(err(400, bad).exit_code(), 2);
        assert!(err(400, bad).to_string().contains("(field ttl)"));
        assert_eq!(err(401, "{}").exit_code(), 4);
        assert_eq!(
            err(409, r#"{"error":{"code":"conflict","message":"x"}}"#).exit_code(),
            6
        );
        assert_eq!(
            err(500, r#"{"error":{"code":"internal","message":"x"}}"#).exit_code(),
            1
        );
    }

    #[test]
    fn keyd_messages_are_one_bounded_line() {
        let long = "a\nb".repeat(500);
        let body = serde_json::json!({"error": {"code": "conflict", "message": long}}).to_string();
        let msg = err(409, &body).to_string();
        assert!(!msg.contains('\n'));
        assert!(msg.chars().count() <= 301);
    }

    #[test]
    fn base_url_validation() {
        assert_eq!(
            BaseUrl::parse("--url", "http://127.0.0.1:7433/")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:7433"
        );
        assert_eq!(
            BaseUrl::parse("--url", "http://h/keyd/")
                .unwrap()
                .join("/v1/keys"),
            "http://h/keyd/v1/keys"
        );
        for bad in [
            "127.0.0.1:7433",
            "https://h",
            "ftp://h",
            "http://h/?x=1",
            "http://u@h",
        ] {
            let e = BaseUrl::parse("--url", bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
        }
    }

    #[test]
    fn unreachable_keyd_is_class_3() {
        // Bind then drop to get a port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = BaseUrl::parse("--url", &format!("http://127.0.0.1:{port}")).unwrap();
        let keyd = Keyd::new(base, Secret::new("t")).unwrap();
        let e = keyd.get::<serde_json::Value>("/v1/keys", &[]).unwrap_err();
        assert_eq!(e.exit_code(), 3, "{e}");
    }
}
