//! The configs `keyctl config nginx|caddy` prints, run by the real proxies in front of the
//! fake Ollama with a real keyd deciding: credentials are checked and stripped, the key id
//! is forwarded, admin routes and revoked keys are refused, per-key rates answer 429,
//! streams arrive chunk by chunk, and TLS is 1.3 only with client certificates enforced.
//! (The full authentication matrix lives in the end-to-end suite in tests/.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{external, wait_bounded, Keyctl, Keyd};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process stopped on drop: SIGTERM first, so nginx's master takes its workers
/// down with it (SIGKILL would orphan them), then SIGKILL after 5 s.
struct Proc(Child, &'static str);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    common::dead_port()
}

fn wait_for_port(port: u16, proc: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Some(status) = proc.0.try_wait().unwrap() {
            panic!("{} exited early: {status}", proc.1);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} did not listen on {port} within 20 s", proc.1);
}

struct FakeOllama {
    _proc: Proc,
    port: u16,
}

impl FakeOllama {
    fn start(dir: &Path) -> Self {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fake_ollama/fake_ollama.py");
        let port_file = dir.join("ollama.port");
        let child = Command::new("python3")
            .arg(&script)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--loopback-host-check",
                "--chunk-delay",
                "0.1",
            ])
            .arg("--port-file")
            .arg(&port_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs the fake Ollama");
        let mut proc = Proc(child, "fake ollama");
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Some(p) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break p;
            }
            assert!(Instant::now() < deadline, "fake ollama did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        wait_for_port(port, &mut proc);
        Self { _proc: proc, port }
    }

    fn requests(&self) -> Vec<serde_json::Value> {
        let v: serde_json::Value =
            reqwest::blocking::get(format!("http://127.0.0.1:{}/__fake/requests", self.port))
                .unwrap()
                .json()
                .unwrap();
        v.as_array().unwrap().clone()
    }

    fn reset(&self) {
        reqwest::blocking::Client::new()
            .post(format!("http://127.0.0.1:{}/__fake/reset", self.port))
            .send()
            .unwrap();
    }
}

#[derive(Clone, Copy, Debug)]
enum Proxy {
    Nginx,
    Caddy,
}

/// Writes the generated config into `dir` and starts the proxy on `port`.
fn start_proxy(
    kind: Proxy,
    bin: &Path,
    dir: &Path,
    port: u16,
    ollama: u16,
    keyd: &Keyd,
    tls: bool,
) -> Proc {
    let name = match kind {
        Proxy::Nginx => "nginx",
        Proxy::Caddy => "caddy",
    };
    let listen = format!("127.0.0.1:{port}");
    let upstream = format!("http://127.0.0.1:{ollama}");
    let mut args = vec![
        "config",
        name,
        "--listen",
        &listen,
        "--upstream",
        &upstream,
        "--keyd",
        &keyd.url,
    ];
    if tls {
        args.extend([
            "--tls-cert",
            "certs/server.crt",
            "--tls-key",
            "certs/server.key",
            "--client-ca",
            "certs/ca.crt",
        ]);
    }
    let text = Keyctl::new().run(&args).ok().stdout;
    let file = dir.join(if matches!(kind, Proxy::Nginx) {
        "nginx.conf"
    } else {
        "Caddyfile"
    });
    std::fs::write(&file, text).unwrap();
    let mut cmd = Command::new(bin);
    match kind {
        Proxy::Nginx => {
            cmd.arg("-p")
                .arg(dir)
                .arg("-c")
                .arg(&file)
                .args(["-g", "daemon off;"]);
        }
        Proxy::Caddy => {
            cmd.args(["run", "--adapter", "caddyfile", "--config"])
                .arg(&file);
        }
    }
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = cmd
        .current_dir(dir)
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut proc = Proc(child, name);
    wait_for_port(port, &mut proc);
    proc
}

fn issue(keyd: &Keyd, args: &[&str]) -> (String, String) {
    let v = keyd
        .keyctl()
        .run(&[&["issue", "--json"][..], args].concat())
        .ok()
        .json();
    (
        v["id"].as_str().unwrap().to_owned(),
        v["key"].as_str().unwrap().to_owned(),
    )
}

fn check_proxy(kind: Proxy, bin: PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let keyd = Keyd::start();
    let ollama = FakeOllama::start(dir.path());
    let port = free_port();
    let _proxy = start_proxy(kind, &bin, dir.path(), port, ollama.port, &keyd, false);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let (id, key) = issue(&keyd, &["--name", "laptop"]);
    let (_, limited) = issue(&keyd, &["--name", "slow", "--rate", "1/m", "--burst", "2"]);

    // keyd applies new keys within about a second.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = http
            .get(format!("{base}/api/tags"))
            .bearer_auth(&key)
            .send()
            .unwrap()
            .status();
        if s == 200 || Instant::now() > deadline {
            assert_eq!(s, 200, "{kind:?}: a valid key is let through");
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    ollama.reset();
    // No credential, garbage: 401 with a body the client parses; Ollama never sees them.
    let r = http.get(format!("{base}/api/tags")).send().unwrap();
    assert_eq!(r.status(), 401, "{kind:?}");
    assert!(r.headers().contains_key("www-authenticate"));
    let body: serde_json::Value = r.json().unwrap();
    assert!(body["error"].is_string(), "{body}");
    let r = http
        .get(format!("{base}/v1/models"))
        .bearer_auth("kg_garbage")
        .send()
        .unwrap();
    assert_eq!(r.status(), 401, "{kind:?}");
    let body: serde_json::Value = r.json().unwrap();
    assert!(
        body["error"]["message"].is_string(),
        "OpenAI-shaped on /v1: {body}"
    );
    // Admin routes are not granted by default.
    let r = http
        .post(format!("{base}/api/pull"))
        .bearer_auth(&key)
        .body(r#"{"model":"llama3.2"}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 403, "{kind:?}");
    assert!(
        ollama.requests().is_empty(),
        "{kind:?}: denied requests reached Ollama"
    );

    // Allowed: credential stripped, key id forwarded (a client's own value replaced), Host
    // rewritten for Ollama's loopback check, body intact.
    let r = http
        .post(format!("{base}/api/chat"))
        .bearer_auth(&key)
        .header("x-keygate-key-id", "spoofed")
        .body(r#"{"model":"llama3.2","messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{kind:?}");
    // Streaming: lines arrive as Ollama writes them (0.1 s apart), not all at the end.
    let mut arrivals = Vec::new();
    let start = Instant::now();
    for line in BufReader::new(r).lines() {
        let line = line.unwrap();
        if !line.is_empty() {
            arrivals.push(start.elapsed());
        }
    }
    assert!(arrivals.len() >= 5, "{kind:?}: {arrivals:?}");
    let spread = *arrivals.last().unwrap() - arrivals[0];
    assert!(
        spread >= Duration::from_millis(400),
        "{kind:?}: stream was buffered: {arrivals:?}"
    );
    let seen = ollama.requests();
    assert_eq!(seen.len(), 1, "{kind:?}");
    let h = &seen[0]["headers"];
    assert_eq!(h["x-keygate-key-id"], id.as_str(), "{kind:?}: {h}");
    assert!(
        h.get("authorization").is_none() && h.get("x-api-key").is_none(),
        "{kind:?}: {h}"
    );
    assert_eq!(h["host"], format!("127.0.0.1:{}", ollama.port), "{kind:?}");
    assert!(seen[0]["body"].as_str().unwrap().contains("llama3.2"));

    // Signed requests' ts parameter is not forwarded.
    ollama.reset();
    let s = http
        .get(format!("{base}/api/tags?ts=1700000000"))
        .header("x-api-key", &key)
        .send()
        .unwrap()
        .status();
    assert_eq!(s, 200);
    let seen = ollama.requests();
    assert_eq!(seen[0]["path"], "/api/tags", "{kind:?}");
    assert!(
        seen[0]["headers"].get("x-api-key").is_none(),
        "{kind:?}: {}",
        seen[0]
    );

    // Per-key rate: 2 at once, then 429 with Retry-After.
    let statuses: Vec<u16> = (0..4)
        .map(|_| {
            http.get(format!("{base}/api/tags"))
                .bearer_auth(&limited)
                .send()
                .unwrap()
        })
        .map(|r| {
            if r.status() == 429 {
                assert!(r.headers().contains_key("retry-after"), "{kind:?}");
            }
            r.status().as_u16()
        })
        .collect();
    assert_eq!(statuses, [200, 200, 429, 429], "{kind:?}");

    // Revocation is enforced within a second.
    keyd.keyctl().run(&["revoke", &id]).ok();
    let revoked_at = Instant::now();
    loop {
        let s = http
            .get(format!("{base}/api/tags"))
            .bearer_auth(&key)
            .send()
            .unwrap()
            .status();
        if s == 401 {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "{kind:?}: revoked key still works"
        );
        std::thread::sleep(Duration::from_millis(25));
    }

    // keyd down: fail closed.
    drop(keyd);
    let s = http
        .get(format!("{base}/api/tags"))
        .bearer_auth(&limited)
        .send()
        .unwrap()
        .status();
    assert!(
        s == 503 || s == 502,
        "{kind:?}: keyd unreachable must not let requests through: {s}"
    );
}

/// Runs `openssl s_client` with an HTTP request on stdin; returns (exit ok, output).
fn s_client(port: u16, dir: &Path, args: &[&str], key: &str) -> (bool, String) {
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-CAfile",
            "certs/ca.crt",
        ])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl");
    let req = format!("GET /api/tags HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n");
    let _ = child.stdin.take().unwrap().write_all(req.as_bytes());
    let status = wait_bounded(&mut child, Duration::from_secs(20), &["openssl s_client"]);
    let mut out = String::new();
    let _ = child.stdout.take().unwrap().read_to_string(&mut out);
    let _ = child.stderr.take().unwrap().read_to_string(&mut out);
    (status.success(), out)
}

fn check_tls(kind: Proxy, bin: PathBuf) {
    let Some(_) = external("openssl") else { return };
    let dir = tempfile::tempdir().unwrap();
    Keyctl::new()
        .run(&[
            "certs",
            "init",
            dir.path().join("certs").to_str().unwrap(),
            "--client",
            "alice",
        ])
        .ok();
    let keyd = Keyd::start();
    let ollama = FakeOllama::start(dir.path());
    let port = free_port();
    let _proxy = start_proxy(kind, &bin, dir.path(), port, ollama.port, &keyd, true);
    let (_, key) = issue(&keyd, &["--name", "tls"]);
    std::thread::sleep(Duration::from_millis(1200));
    let cert = [
        "-cert",
        "certs/client-alice.crt",
        "-key",
        "certs/client-alice.key",
    ];

    let (_, out) = s_client(port, dir.path(), &[&["-tls1_2"][..], &cert].concat(), &key);
    assert!(
        !out.contains("HTTP/1.1 200"),
        "{kind:?}: TLS 1.2 must be refused:\n{out}"
    );
    let (_, out) = s_client(port, dir.path(), &[&["-tls1_3"][..], &cert].concat(), &key);
    assert!(
        out.contains("HTTP/1.1 200"),
        "{kind:?}: TLS 1.3 with a client certificate:\n{out}"
    );
    let (_, out) = s_client(port, dir.path(), &["-tls1_3"], &key);
    assert!(
        !out.contains("HTTP/1.1 200"),
        "{kind:?}: no client certificate must be refused:\n{out}"
    );
}

#[test]
fn nginx_enforces_keyd_decisions() {
    let Some(bin) = external("nginx") else { return };
    check_proxy(Proxy::Nginx, bin);
}

#[test]
fn caddy_enforces_keyd_decisions() {
    let Some(bin) = external("caddy") else { return };
    check_proxy(Proxy::Caddy, bin);
}

#[test]
fn nginx_tls13_and_client_certificates() {
    let Some(bin) = external("nginx") else { return };
    check_tls(Proxy::Nginx, bin);
}

#[test]
fn caddy_tls13_and_client_certificates() {
    let Some(bin) = external("caddy") else { return };
    check_tls(Proxy::Caddy, bin);
}
