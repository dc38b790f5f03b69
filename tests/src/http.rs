//! A small blocking HTTP client for the tests: a fresh connection per request (so requests
//! spread over Envoy's workers), bounded timeouts, the answer fully read.

use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("http client")
}

/// Sends a request; `headers` are added as given; a transport error is a test failure.
pub fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Resp {
    try_send(method, url, headers, body).unwrap_or_else(|e| panic!("{method} {url} failed: {e}"))
}

pub fn try_send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Resp, String> {
    let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let mut rb = client().request(m, url);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    if let Some(b) = body {
        rb = rb.body(b.to_vec());
    }
    let r = rb.send().map_err(|e| format!("{e:#}"))?;
    let status = r.status().as_u16();
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = r.text().map_err(|e| e.to_string())?;
    Ok(Resp {
        status,
        headers,
        body,
    })
}

pub fn get(url: &str, headers: &[(&str, &str)]) -> Resp {
    send("GET", url, headers, None)
}

pub fn post_json(url: &str, headers: &[(&str, &str)], body: &serde_json::Value) -> Resp {
    let mut h = headers.to_vec();
    h.push(("content-type", "application/json"));
    send("POST", url, &h, Some(body.to_string().as_bytes()))
}

pub fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}
