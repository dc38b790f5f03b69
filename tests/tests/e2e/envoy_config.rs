//! The shipped Envoy example is what `keyctl config envoy` prints, and Envoy accepts it.

use keygate_e2e::envoy_config::{render, EnvoyOpts};
use keygate_e2e::tools::{self, repo_root};
use std::process::Command;

/// The options the shipped example is generated with (placeholders an operator replaces
/// by running `keyctl config envoy`).
fn example_opts() -> EnvoyOpts {
    let key = keygate_core::snapshot::SnapshotSigner::from_seed([1; 32]).verifying_key();
    EnvoyOpts {
        listen: "0.0.0.0:8080".into(),
        upstream: "http://127.0.0.1:11434".into(),
        keyd: vec!["http://127.0.0.1:7433".into()],
        wasm: "target/wasm32-wasip1/release/keygate_filter.wasm".into(),
        admin: None,
        snapshot_public_keys: vec![keygate_core::snapshot::encode_public_key(&key)],
        filter_credential: "kgf_EXAMPLE_run_keyctl_config_envoy_for_a_real_one".into(),
        tls_cert: None,
        tls_key: None,
        client_ca: None,
    }
}

const EXAMPLE: &str = "envoy/envoy.yaml";

#[test]
fn shipped_example_matches_the_generator() {
    let want = render(&example_opts()).expect("render");
    let path = repo_root().join(EXAMPLE);
    if std::env::var_os("KEYGATE_REGENERATE").is_some() {
        std::fs::write(&path, &want).expect("write example");
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{EXAMPLE} drifted from `keyctl config envoy`; regenerate it with\n  KEYGATE_REGENERATE=1 cargo test -p keygate-e2e --test e2e shipped_example"
    );
}

fn validate(config: &std::path::Path) {
    let Some(envoy) = tools::envoy() else { return };
    let out = Command::new(envoy)
        .args(["--mode", "validate", "-c"])
        .arg(config)
        .current_dir(repo_root())
        .output()
        .expect("run envoy --mode validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "envoy --mode validate {}:\n{text}",
        config.display()
    );
}

#[test]
fn shipped_example_validates() {
    validate(&repo_root().join(EXAMPLE));
}

#[test]
fn tls_and_client_certificates_validate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = rcgen::generate_simple_self_signed(vec!["keygate test CA".into()]).expect("ca");
    let server = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write pem");
        p.display().to_string()
    };
    let mut o = example_opts();
    o.wasm = repo_root().join(&o.wasm).display().to_string();
    o.tls_cert = Some(write("server.crt", server.cert.pem()));
    o.tls_key = Some(write("server.key", server.key_pair.serialize_pem()));
    o.client_ca = Some(write("ca.crt", ca.cert.pem()));
    o.admin = Some("127.0.0.1:9901".into());
    o.keyd.push("https://keyd-2.example:7433".into());
    let yaml = render(&o);
    assert!(yaml.is_err(), "mixed http/https keyd URLs are refused");
    o.keyd.pop();
    let yaml = render(&o).expect("render");
    assert!(yaml.contains("tls_minimum_protocol_version: TLSv1_3"));
    assert!(yaml.contains("require_client_certificate: true"));
    let path = dir.path().join("envoy-tls.yaml");
    std::fs::write(&path, yaml).expect("write");
    validate(&path);
}
