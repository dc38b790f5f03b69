//! A stand-in for keyd's filter endpoint (`GET /v1/snapshot`, `GET /healthz`) that serves
//! snapshots the test builds and signs itself: full, delta and long-poll exactly as
//! docs/api.md describes. Used where a test needs to control the snapshot bytes (a wrong
//! signer, a forged delta) rather than go through keyd's admin API.

use keygate_core::snapshot::{encode_public_key, Snapshot, SnapshotSigner};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct State {
    signer: SnapshotSigner,
    /// `history[i]` is version `i + 1`.
    history: Vec<Snapshot>,
    /// When set, every snapshot answer is signed by this key instead (a forged snapshot).
    forger: Option<SnapshotSigner>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    credential: String,
    stop: AtomicBool,
    fetches: AtomicUsize,
}

#[derive(Debug)]
pub struct FakeKeyd {
    pub port: u16,
    shared: Arc<Shared>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

impl FakeKeyd {
    pub fn start(signer: SnapshotSigner, credential: &str, mut first: Snapshot) -> FakeKeyd {
        first.version = 1;
        first.issued_at = now();
        first.canonicalize();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake keyd");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                signer,
                history: vec![first],
                forger: None,
            }),
            changed: Condvar::new(),
            credential: credential.to_owned(),
            stop: AtomicBool::new(false),
            fetches: AtomicUsize::new(0),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    let s = s.clone();
                    std::thread::spawn(move || serve(c, &s));
                }
            }
        });
        FakeKeyd { port, shared }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn public_key(&self) -> String {
        let st = self.shared.state.lock().expect("lock");
        encode_public_key(&st.signer.verifying_key())
    }

    /// Publishes a new version made by `f` from the current one; returns its number.
    pub fn update(&self, f: impl FnOnce(&mut Snapshot)) -> u64 {
        let mut st = self.shared.state.lock().expect("lock");
        let mut next = st.history.last().cloned().unwrap_or_default();
        f(&mut next);
        next.version = st.history.len() as u64 + 1;
        next.issued_at = now();
        next.canonicalize();
        st.history.push(next);
        self.shared.changed.notify_all();
        st.history.len() as u64
    }

    /// From now on, sign with `forger` (a key the filter does not pin).
    pub fn forge_with(&self, forger: Option<SnapshotSigner>) {
        self.shared.state.lock().expect("lock").forger = forger;
    }

    /// Snapshot fetches served so far (long-polls included).
    pub fn fetches(&self) -> usize {
        self.shared.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for FakeKeyd {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn respond(c: &mut TcpStream, status: &str, ctype: &str, extra: &str, body: &[u8]) -> bool {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n{extra}\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).is_ok() && c.write_all(body).is_ok()
}

fn serve(c: TcpStream, s: &Shared) {
    let Ok(read_half) = c.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut c = c;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || s.stop.load(Ordering::SeqCst) {
            return;
        }
        let mut parts = line.split_whitespace();
        let (Some(_method), Some(target)) = (parts.next(), parts.next()) else {
            return;
        };
        let target = target.to_owned();
        let mut auth = None;
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "authorization" => auth = Some(v.trim().to_owned()),
                    "content-length" => len = v.trim().parse().unwrap_or(0),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; len];
        if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
            return;
        }
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let ok = match path {
            "/healthz" => {
                let v = s.state.lock().map(|st| st.history.len()).unwrap_or(0);
                respond(
                    &mut c,
                    "200 OK",
                    "application/json",
                    "",
                    format!("{{\"status\":\"ok\",\"version\":{v}}}").as_bytes(),
                )
            }
            "/v1/snapshot" => {
                if auth.as_deref() != Some(&format!("Bearer {}", s.credential)) {
                    respond(
                        &mut c,
                        "401 Unauthorized",
                        "application/json",
                        "",
                        br#"{"error":{"code":"unauthenticated","message":"bad filter credential"}}"#,
                    )
                } else {
                    s.fetches.fetch_add(1, Ordering::SeqCst);
                    snapshot(&mut c, s, query)
                }
            }
            _ => respond(&mut c, "404 Not Found", "application/json", "", b"{}"),
        };
        if !ok {
            return;
        }
    }
}

fn param(query: &str, name: &str) -> u64 {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn snapshot(c: &mut TcpStream, s: &Shared, query: &str) -> bool {
    let since = param(query, "since");
    let wait = param(query, "wait").min(60);
    let Ok(mut st) = s.state.lock() else {
        return false;
    };
    let deadline = Instant::now() + Duration::from_secs(wait);
    while since != 0 && since == st.history.len() as u64 && wait > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || s.stop.load(Ordering::SeqCst) {
            break;
        }
        match s.changed.wait_timeout(st, left) {
            Ok((g, _)) => st = g,
            Err(_) => return false,
        }
    }
    let current = st.history.len() as u64;
    if since != 0 && since == current {
        return respond(c, "304 Not Modified", "application/octet-stream", "", b"");
    }
    let signer = st.forger.clone().unwrap_or_else(|| st.signer.clone());
    let last = st.history.last().cloned().unwrap_or_default();
    let bytes = match usize::try_from(since)
        .ok()
        .filter(|&v| v >= 1 && since < current)
        .and_then(|v| st.history.get(v - 1))
    {
        Some(base) => signer.sign_delta(&base.diff(&last)),
        None => signer.sign_full(&last),
    };
    drop(st);
    respond(
        c,
        "200 OK",
        "application/octet-stream",
        &format!("x-keygate-version: {current}\r\n"),
        &bytes,
    )
}
