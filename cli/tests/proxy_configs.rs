//! The shipped nginx and Caddy examples are exactly what `keyctl config …` prints, and the
//! proxies themselves accept them (`nginx -t`, `caddy validate`). Set KEYGATE_REGENERATE=1
//! to rewrite the examples from the generator instead of comparing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{external, wait_bounded, Keyctl};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const TLS: [&str; 6] = [
    "--tls-cert",
    "certs/server.crt",
    "--tls-key",
    "certs/server.key",
    "--client-ca",
    "certs/ca.crt",
];

/// (file under the repository root, keyctl arguments that generate it)
fn examples() -> Vec<(&'static str, Vec<&'static str>)> {
    let with_tls = |base: &[&'static str]| [base, &TLS[..]].concat();
    vec![
        (
            "nginx/nginx.conf",
            vec!["config", "nginx", "--listen", "127.0.0.1:8080"],
        ),
        (
            "nginx/nginx-tls.conf",
            with_tls(&["config", "nginx", "--listen", "127.0.0.1:8443"]),
        ),
        (
            "caddy/Caddyfile",
            vec!["config", "caddy", "--listen", "127.0.0.1:8080"],
        ),
        (
            "caddy/Caddyfile-tls",
            with_tls(&["config", "caddy", "--listen", "127.0.0.1:8443"]),
        ),
    ]
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn generate(args: &[&str]) -> String {
    let out = Keyctl::new().run(args);
    assert_eq!(out.code, 0, "keyctl {args:?}: {}", out.stderr);
    out.stdout
}

#[test]
fn shipped_examples_match_the_generator() {
    let regenerate = std::env::var_os("KEYGATE_REGENERATE").is_some();
    for (file, args) in examples() {
        let text = generate(&args);
        let path = repo().join(file);
        if regenerate {
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let shipped = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{file}: {e}; run with KEYGATE_REGENERATE=1"));
        assert!(
            shipped == text,
            "{file} differs from `keyctl {}`: regenerate with KEYGATE_REGENERATE=1 cargo test -p keyctl --test proxy_configs",
            args.join(" ")
        );
    }
}

/// A directory holding `file` and the certificates its TLS options name.
fn workdir(file: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let name = Path::new(file).file_name().unwrap();
    std::fs::copy(repo().join(file), dir.path().join(name)).unwrap();
    let certs = dir.path().join("certs");
    Keyctl::new()
        .run(&[
            "certs",
            "init",
            certs.to_str().unwrap(),
            "--client",
            "alice",
        ])
        .ok();
    dir
}

fn run(cmd: &mut Command, what: &str) -> (bool, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = wait_bounded(&mut child, Duration::from_secs(60), &[what]);
    let mut text = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    (status.success(), text)
}

#[test]
fn nginx_accepts_the_examples() {
    let Some(nginx) = external("nginx") else {
        return;
    };
    for (file, _) in examples()
        .into_iter()
        .filter(|(f, _)| f.starts_with("nginx/"))
    {
        let dir = workdir(file);
        let conf = dir.path().join(Path::new(file).file_name().unwrap());
        let (ok, out) = run(
            Command::new(&nginx)
                .arg("-t")
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf),
            "nginx -t",
        );
        assert!(ok, "nginx -t rejected {file}:\n{out}");
        assert!(out.contains("test is successful"), "{out}");
    }
}

#[test]
fn caddy_accepts_the_examples() {
    let Some(caddy) = external("caddy") else {
        return;
    };
    for (file, _) in examples()
        .into_iter()
        .filter(|(f, _)| f.starts_with("caddy/"))
    {
        let dir = workdir(file);
        let (ok, out) = run(
            Command::new(&caddy)
                .args(["validate", "--adapter", "caddyfile", "--config"])
                .arg(Path::new(file).file_name().unwrap())
                .current_dir(dir.path())
                .env("HOME", dir.path())
                .env("XDG_DATA_HOME", dir.path().join("data"))
                .env("XDG_CONFIG_HOME", dir.path().join("config")),
            "caddy validate",
        );
        assert!(ok, "caddy validate rejected {file}:\n{out}");
        assert!(out.contains("Valid configuration"), "{out}");
        assert!(
            !out.contains("not formatted"),
            "{file} is not in `caddy fmt` form:\n{out}"
        );
    }
}

#[test]
fn generated_paths_are_validated() {
    for args in [
        &[
            "config",
            "nginx",
            "--listen",
            "127.0.0.1:8443",
            "--tls-cert",
            "a b.crt",
            "--tls-key",
            "k",
        ][..],
        &[
            "config",
            "caddy",
            "--listen",
            ":8443",
            "--tls-cert",
            "c",
            "--tls-key",
            "k;evil",
        ],
        &[
            "config",
            "caddy",
            "--listen",
            ":8443",
            "--client-ca",
            "ca.crt",
        ],
        &[
            "config",
            "nginx",
            "--listen",
            ":80",
            "--upstream",
            "http://h/api",
        ],
        &[
            "config",
            "nginx",
            "--listen",
            ":80",
            "--per-key-rate",
            "7/h",
        ],
    ] {
        let out = Keyctl::new().run(args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
    }
}
