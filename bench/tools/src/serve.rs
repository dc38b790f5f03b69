//! A stand-in for keyd's filter endpoints, serving one pre-built signed snapshot, so the
//! filter can be loaded with 100k or 1M keys without a million admin API calls.
//!
//! Speaks just enough HTTP/1.1 (keep-alive, Content-Length bodies) for Envoy's async HTTP
//! client and for `keyctl config envoy`:
//! * `GET /v1/snapshot?since=V&wait=S`: the full snapshot, or, when `since` is the current
//!   version, the request is held for `wait` seconds (max 60) and answered 304, as keyd does;
//! * `POST /v1/filter-credentials`: a fixed credential and the snapshot public key;
//! * `GET /.well-known/jwks.json`, `GET /healthz`.
//!
//! Each full snapshot served is logged to stderr with wall-clock times (`SERVED full …`) so
//! the runner can time snapshot sync.

use crate::args::Args;
use crate::error::{file, Error, Result};
use crate::gen::VERSION;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest request head accepted; the runner's requests are a few hundred bytes.
const MAX_HEAD: usize = 64 * 1024;
/// Longest request body read (the filter-credentials body is tiny).
const MAX_BODY: usize = 64 * 1024;

#[derive(Debug)]
struct State {
    snapshot: Vec<u8>,
    public_key: String,
    jwks: Vec<u8>,
}

fn epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub fn serve(a: &Args) -> Result<()> {
    let dir = a.dir()?;
    let listen = a.str("listen").unwrap_or("127.0.0.1:0");
    let snap_path = dir.join("snapshot.bin");
    let snapshot = std::fs::read(&snap_path).map_err(file(&snap_path))?;
    let info_path = dir.join("info.json");
    let public_key = std::fs::read(&info_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            v.get("snapshot_public_key")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        })
        .ok_or_else(|| Error::Info(format!("cannot read {}", info_path.display())))?;
    let jwks = std::fs::read(dir.join("jwks.json")).unwrap_or_else(|_| b"{\"keys\":[]}".to_vec());
    let state = Arc::new(State {
        snapshot,
        public_key,
        jwks,
    });
    let listener = TcpListener::bind(listen)?;
    let addr = listener.local_addr()?;
    if let Some(pf) = a.str("port-file") {
        let pf = std::path::Path::new(pf);
        std::fs::write(pf, addr.port().to_string()).map_err(file(pf))?;
    }
    println!("LISTENING {addr}");
    std::io::stdout().flush()?;
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let state = Arc::clone(&state);
        std::thread::spawn(move || {
            // A broken connection only ends that connection.
            let _ = handle(conn, &state);
        });
    }
    Ok(())
}

struct Request {
    method: String,
    path: String,
    query: String,
    close: bool,
}

fn read_request(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    let mut head = 0usize;
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("/").to_owned();
    let version = parts.next().unwrap_or("HTTP/1.1").to_owned();
    let mut content_length = 0usize;
    let mut close = version == "HTTP/1.0";
    loop {
        let mut h = String::new();
        let n = r.read_line(&mut h)?;
        head += n;
        if n == 0 || head > MAX_HEAD {
            return Ok(None);
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim();
            if name == "content-length" {
                content_length = value.parse().unwrap_or(0);
            } else if name == "connection" {
                close = value.eq_ignore_ascii_case("close");
            }
        }
    }
    if content_length > MAX_BODY {
        return Ok(None);
    }
    let mut body = vec![0u8; content_length];
    r.read_exact(&mut body)?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (target, String::new()),
    };
    Ok(Some(Request {
        method,
        path,
        query,
        close,
    }))
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn respond(
    w: &mut TcpStream,
    status: &str,
    content_type: &str,
    extra: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n{extra}\r\n",
        body.len()
    );
    w.write_all(head.as_bytes())?;
    w.write_all(body)?;
    w.flush()
}

fn handle(conn: TcpStream, state: &State) -> std::io::Result<()> {
    conn.set_nodelay(true)?;
    let mut w = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    while let Some(req) = read_request(&mut r)? {
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/v1/snapshot") => {
                let since: u64 = query_param(&req.query, "since")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let wait: u64 = query_param(&req.query, "wait")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
                    .min(60);
                if since == VERSION {
                    // Nothing ever changes here: hold like keyd's long-poll, then 304.
                    std::thread::sleep(Duration::from_secs(wait));
                    respond(
                        &mut w,
                        "304 Not Modified",
                        "application/octet-stream",
                        &format!("x-keygate-version: {VERSION}\r\n"),
                        b"",
                    )?;
                } else {
                    let start = epoch();
                    respond(
                        &mut w,
                        "200 OK",
                        "application/octet-stream",
                        &format!("x-keygate-version: {VERSION}\r\n"),
                        &state.snapshot,
                    )?;
                    eprintln!(
                        "SERVED full bytes={} start={start:.6} end={:.6}",
                        state.snapshot.len(),
                        epoch()
                    );
                }
            }
            ("POST", "/v1/filter-credentials") => {
                let body = serde_json::json!({
                    "id": "benchfilter01",
                    "credential": "kgf_bench_stand_in_credential",
                    "snapshot_public_keys": [state.public_key],
                });
                respond(
                    &mut w,
                    "201 Created",
                    "application/json",
                    "",
                    body.to_string().as_bytes(),
                )?;
            }
            ("GET", "/.well-known/jwks.json") => {
                respond(&mut w, "200 OK", "application/json", "", &state.jwks)?;
            }
            ("GET", "/healthz") => {
                let body = format!("{{\"status\":\"ok\",\"version\":{VERSION}}}");
                respond(&mut w, "200 OK", "application/json", "", body.as_bytes())?;
            }
            _ => {
                respond(
                    &mut w,
                    "404 Not Found",
                    "application/json",
                    "",
                    br#"{"error":{"code":"not_found","message":"the benchmark stand-in serves only /v1/snapshot"}}"#,
                )?;
            }
        }
        if req.close {
            break;
        }
    }
    Ok(())
}
