//! Envoy's side of issue 6: with certificates from `keyctl certs init` and the config from
//! `keyctl config envoy --tls-cert/--tls-key [--client-ca]`, the listener speaks TLS 1.3
//! only, requires client certificates when given a client CA, and an Envoy local rate
//! limit caps the whole listener before any key is looked at.
//!
//! TLS clients are `openssl s_client` runs, so each handshake uses exactly the protocol
//! version and certificates a test names.

use keygate_e2e::envoy::{port_of, Envoy};
use keygate_e2e::envoy_config::CEILING_PER_SEC;
use keygate_e2e::fake_ollama::FakeOllama;
use keygate_e2e::http::{bearer, try_send};
use keygate_e2e::keyd::{Keyctl, Keyd};
use keygate_e2e::proc::{free_port, wait_for};
use keygate_e2e::tools;
use serde_json::json;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// keyd + fake Ollama + Envoy configured by `keyctl config envoy`; certificates in
/// `<dir>/certs` (clients `alice`) and, from a second CA nobody trusts, `<dir>/other`
/// (client `mallory`).
struct Gateway {
    envoy: Envoy,
    keyd: Keyd,
    ollama: FakeOllama,
    openssl: PathBuf,
    dir: tempfile::TempDir,
}

#[derive(Debug)]
struct Handshake {
    /// `openssl s_client` exited 0.
    ok: bool,
    /// The HTTP status the server answered, if a response arrived.
    status: Option<u16>,
    output: String,
}

impl Gateway {
    /// `tls_args`: `config envoy` options with `{certs}` standing for the certificate
    /// directory; `edit` adjusts the generated YAML.
    fn start(tls_args: &[&str], edit: impl FnOnce(String) -> String) -> Option<Gateway> {
        let envoy_bin = tools::envoy()?;
        let wasm = tools::wasm()?;
        let keyd_bin = tools::keyd()?;
        let keyctl_bin = tools::keyctl()?;
        let openssl = tools::openssl()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let keyd = Keyd::start(&keyd_bin, dir.path());
        let keyctl = Keyctl {
            bin: keyctl_bin,
            url: keyd.url(),
        };
        let certs = dir.path().join("certs");
        let other = dir.path().join("other");
        keyctl.ok(&[
            "certs",
            "init",
            &certs.display().to_string(),
            "--client",
            "alice",
        ]);
        keyctl.ok(&[
            "certs",
            "init",
            &other.display().to_string(),
            "--client",
            "mallory",
        ]);
        let ollama = FakeOllama::start(dir.path(), &["--loopback-host-check"]);
        let listen = format!("127.0.0.1:{}", free_port());
        let admin = format!("127.0.0.1:{}", free_port());
        let wasm = wasm.display().to_string();
        let upstream = ollama.url();
        let (keyd_url, certs_dir) = (keyd.url(), certs.display().to_string());
        let tls: Vec<String> = tls_args
            .iter()
            .map(|a| a.replace("{certs}", &certs_dir))
            .collect();
        let mut args = vec![
            "config",
            "envoy",
            "--listen",
            &listen,
            "--upstream",
            &upstream,
            "--keyd",
            &keyd_url,
            "--wasm",
            &wasm,
            "--admin",
            &admin,
        ];
        args.extend(tls.iter().map(String::as_str));
        let yaml = edit(keyctl.ok(&args));
        let envoy = Envoy::start_yaml(
            &envoy_bin,
            dir.path(),
            &yaml,
            port_of(&listen),
            port_of(&admin),
        );
        // Ready when the filter holds a snapshot (read from the stats, so no request is
        // spent on the listener: the ceiling test counts them).
        let ready = wait_for(Duration::from_secs(20), || {
            (envoy.stat("wasmcustom.keygate.snapshot_version")? >= 1).then_some(())
        });
        assert!(
            ready.is_some(),
            "the filter never loaded a snapshot:\n{}",
            envoy.proc.output()
        );
        Some(Gateway {
            envoy,
            keyd,
            ollama,
            openssl,
            dir,
        })
    }

    /// Issues a key and waits until the filter knows it.
    fn key(&self, name: &str) -> String {
        let (_, key) = self.keyd.issue(json!({ "name": name }));
        let want = self.keyd.version();
        let ok = wait_for(Duration::from_secs(10), || {
            (self.envoy.stat("wasmcustom.keygate.snapshot_version")? >= want).then_some(())
        });
        assert!(ok.is_some(), "{}", self.envoy.proc.output());
        key
    }

    /// One `GET /api/tags` over `openssl s_client` with `args` (protocol, certificates),
    /// trusting `ca` (relative to the test directory) and checking the server's certificate
    /// is for 127.0.0.1; bounded to 20 s.
    fn s_client(&self, ca: &str, args: &[&str], key: Option<&str>) -> Handshake {
        let out_path = self
            .dir
            .path()
            .join(format!("s_client-{}.out", free_port()));
        let out = std::fs::File::create(&out_path).expect("s_client output file");
        let err = out.try_clone().expect("clone output handle");
        let mut child = Command::new(&self.openssl)
            .args(["s_client", "-brief", "-ign_eof", "-verify_return_error"])
            .args(["-connect", &format!("127.0.0.1:{}", self.envoy.port)])
            .args(["-CAfile", ca, "-verify_ip", "127.0.0.1"])
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("run openssl s_client");
        let auth = key.map(|k| format!("Authorization: {}\r\n", bearer(k)));
        let request = format!(
            "GET /api/tags HTTP/1.1\r\nHost: 127.0.0.1\r\n{}Connection: close\r\n\r\n",
            auth.unwrap_or_default()
        );
        if let Some(mut stdin) = child.stdin.take() {
            // A refused handshake may close the pipe first: that is an outcome, not an error.
            let _ = stdin.write_all(request.as_bytes());
        }
        let exit = wait_for(Duration::from_secs(20), || child.try_wait().ok().flatten());
        if exit.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let output = std::fs::read_to_string(&out_path).unwrap_or_default();
        assert!(
            exit.is_some(),
            "openssl s_client {args:?} did not finish within 20 s:\n{output}"
        );
        let status = output
            .split("HTTP/1.1 ")
            .nth(1)
            .and_then(|rest| rest.get(..3))
            .and_then(|s| s.parse().ok());
        Handshake {
            ok: exit.is_some_and(|s| s.success()),
            status,
            output,
        }
    }
}

fn client_cert(dir: &str, name: &str) -> [String; 4] {
    [
        "-cert".into(),
        format!("{dir}/client-{name}.crt"),
        "-key".into(),
        format!("{dir}/client-{name}.key"),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

const SERVER_TLS: [&str; 4] = [
    "--tls-cert",
    "{certs}/server.crt",
    "--tls-key",
    "{certs}/server.key",
];

#[test]
fn tls_1_3_only_with_the_generated_certificates() {
    let Some(g) = Gateway::start(&SERVER_TLS, |y| y) else {
        return;
    };
    let key = g.key("tls");
    let ca = "certs/ca.crt";

    let h = g.s_client(ca, &["-tls1_2"], Some(&key));
    assert!(
        !h.ok && h.status.is_none(),
        "a TLS 1.2 handshake must fail: {h:?}"
    );

    let h = g.s_client(ca, &["-tls1_3"], Some(&key));
    assert_eq!(h.status, Some(200), "TLS 1.3 with an API key: {h:?}");
    assert!(
        h.output.contains("Protocol version: TLSv1.3"),
        "{}",
        h.output
    );
    assert!(
        h.output.contains("Verification: OK"),
        "the generated CA verifies the server certificate: {}",
        h.output
    );
    // Without a version option the client offers everything; the server still picks 1.3.
    let h = g.s_client(ca, &[], Some(&key));
    assert_eq!(h.status, Some(200), "{h:?}");
    assert!(h.output.contains("Protocol version: TLSv1.3"), "{h:?}");
    // The key is still required over TLS, and the filter still answers.
    let h = g.s_client(ca, &["-tls1_3"], None);
    assert_eq!(h.status, Some(401), "TLS 1.3 without an API key: {h:?}");
    // A client trusting another CA refuses the server: the check above meant something.
    let h = g.s_client("other/ca.crt", &["-tls1_3"], Some(&key));
    assert!(
        !h.ok && h.status.is_none(),
        "a client trusting another CA must not connect: {h:?}"
    );
    let seen = g.ollama.requests();
    assert_eq!(seen.len(), 2, "only the two 200s reached Ollama: {seen:?}");
    assert!(seen.iter().all(|r| r.header("authorization").is_none()));
}

#[test]
fn client_certificates_are_required_with_a_client_ca() {
    let mut args = SERVER_TLS.to_vec();
    args.extend(["--client-ca", "{certs}/ca.crt"]);
    let Some(g) = Gateway::start(&args, |y| y) else {
        return;
    };
    let key = g.key("mtls");
    let ca = "certs/ca.crt";
    let alice = client_cert("certs", "alice");
    let mallory = client_cert("other", "mallory");

    let h = g.s_client(ca, &["-tls1_3"], Some(&key));
    assert!(
        h.status.is_none(),
        "a client without a certificate must be refused: {h:?}"
    );
    let h = g.s_client(
        ca,
        &[&["-tls1_3"][..], &strs(&mallory)].concat(),
        Some(&key),
    );
    assert!(
        h.status.is_none(),
        "a certificate from another CA must be refused: {h:?}"
    );
    let h = g.s_client(ca, &[&["-tls1_2"][..], &strs(&alice)].concat(), Some(&key));
    assert!(
        !h.ok && h.status.is_none(),
        "TLS 1.2 stays refused with a good certificate: {h:?}"
    );
    let h = g.s_client(ca, &[&["-tls1_3"][..], &strs(&alice)].concat(), Some(&key));
    assert_eq!(h.status, Some(200), "a generated client certificate: {h:?}");
    // The certificate admits the connection; the API key still decides the request.
    let h = g.s_client(ca, &[&["-tls1_3"][..], &strs(&alice)].concat(), None);
    assert_eq!(
        h.status,
        Some(401),
        "a certificate is not an API key: {h:?}"
    );
    assert_eq!(g.ollama.requests().len(), 1, "only the 200 reached Ollama");
}

/// The generator's ceiling (`CEILING_PER_SEC`, burst twice that) cannot be reached by a
/// test without flooding the machine, and `keyctl config envoy` has no option to lower it:
/// the test lowers the generated token bucket in the YAML and checks what the generated
/// filter chain does with it (enabled, enforced, in front of the keygate filter).
#[test]
fn the_global_ceiling_answers_429_before_the_key_is_looked_at() {
    const BURST: u32 = 5;
    let lower = |y: String| {
        let low = y
            .replace(
                &format!("max_tokens: {}\n", CEILING_PER_SEC * 2),
                &format!("max_tokens: {BURST}\n"),
            )
            .replace(
                &format!("tokens_per_fill: {CEILING_PER_SEC}\n"),
                &format!("tokens_per_fill: {BURST}\n"),
            )
            .replace("fill_interval: 1s\n", "fill_interval: 3600s\n");
        assert!(
            low.contains(&format!("max_tokens: {BURST}\n"))
                && low.contains("fill_interval: 3600s\n"),
            "the generated local rate limit changed shape:\n{y}"
        );
        low
    };
    let Some(g) = Gateway::start(&[], lower) else {
        return;
    };
    let key = g.key("ceiling");
    let auth = bearer(&key);
    let started = Instant::now();
    let statuses: Vec<u16> = (0..4 * BURST)
        .map(|_| {
            try_send(
                "GET",
                &g.envoy.url("/api/tags"),
                &[("authorization", &auth)],
                None,
            )
            .map(|r| r.status)
            .unwrap_or(0)
        })
        .collect();
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    eprintln!(
        "ceiling of {BURST}: {statuses:?} in {:?}",
        started.elapsed()
    );
    assert_eq!(
        ok + limited,
        statuses.len(),
        "only 200 or 429: {statuses:?}"
    );
    assert!(
        (1..=BURST as usize).contains(&ok),
        "at most the burst passes: {statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .skip_while(|&&s| s == 200)
            .all(|&s| s == 429),
        "once the ceiling is reached everything is refused: {statuses:?}"
    );
    // Shed before the keygate filter: no credential gets 429, not the filter's 401.
    let r = try_send("GET", &g.envoy.url("/api/tags"), &[], None).expect("request");
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(
        r.header("x-keygate-deny"),
        None,
        "Envoy answered, not the filter"
    );
    assert_eq!(
        g.ollama.requests().len(),
        ok,
        "refused requests reached Ollama"
    );
    let counted = g
        .envoy
        .stat("http.keygate.keygate_ceiling.http_local_rate_limit.rate_limited")
        .or_else(|| {
            g.envoy
                .stat("keygate_ceiling.http_local_rate_limit.rate_limited")
        })
        .unwrap_or(0);
    assert!(
        counted as usize > limited,
        "Envoy counted {counted} rate-limited requests, {limited} + 1 were refused"
    );
}
