//! Envoy as a child process, configured with `keyctl config envoy`'s renderer.

use crate::envoy_config::{render, EnvoyOpts};
use crate::proc::{free_port, port_open, wait_for, Proc};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[derive(Debug)]
pub struct Envoy {
    pub port: u16,
    pub admin: u16,
    pub proc: Proc,
    pub config: PathBuf,
}

/// Options for a local test Envoy: listener and admin on fresh loopback ports.
pub fn local_opts(
    upstream: &str,
    keyd: &[String],
    wasm: &Path,
    snapshot_public_keys: Vec<String>,
    filter_credential: &str,
) -> EnvoyOpts {
    EnvoyOpts {
        listen: format!("127.0.0.1:{}", free_port()),
        upstream: upstream.to_owned(),
        keyd: keyd.to_vec(),
        wasm: wasm.display().to_string(),
        admin: Some(format!("127.0.0.1:{}", free_port())),
        snapshot_public_keys,
        filter_credential: filter_credential.to_owned(),
        tls_cert: None,
        tls_key: None,
        client_ca: None,
    }
}

pub fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("address with port")
}

impl Envoy {
    /// Renders `opts`, lets `edit` adjust the YAML (e.g. a shorter staleness), and starts
    /// Envoy with `--concurrency 2`. Waits until the admin interface reports LIVE.
    pub fn start(
        envoy_bin: &Path,
        dir: &Path,
        opts: &EnvoyOpts,
        edit: impl FnOnce(String) -> String,
    ) -> Envoy {
        let yaml = edit(render(opts).expect("render envoy config"));
        let admin = port_of(opts.admin.as_deref().expect("test Envoy has an admin port"));
        Self::start_yaml(envoy_bin, dir, &yaml, port_of(&opts.listen), admin)
    }

    /// Starts Envoy on a ready-made bootstrap whose listener and admin ports are given.
    pub fn start_yaml(envoy_bin: &Path, dir: &Path, yaml: &str, port: u16, admin: u16) -> Envoy {
        let config = dir.join(format!("envoy-{port}.yaml"));
        std::fs::write(&config, yaml).expect("write envoy yaml");
        let mut cmd = Command::new(envoy_bin);
        cmd.arg("-c")
            .arg(&config)
            .args(["--concurrency", "2", "--disable-hot-restart"])
            .args(["--file-flush-interval-msec", "100"])
            .args(["--log-level", "warn", "--component-log-level", "wasm:info"]);
        let mut proc = Proc::spawn(&format!("envoy-{port}"), cmd, dir);
        let live = wait_for(Duration::from_secs(30), || {
            if !proc.is_running() {
                return Some(false);
            }
            let ready =
                crate::http::try_send("GET", &format!("http://127.0.0.1:{admin}/ready"), &[], None)
                    .is_ok_and(|r| r.status == 200);
            (ready && port_open(port)).then_some(true)
        });
        assert_eq!(
            live,
            Some(true),
            "Envoy did not start; its output:\n{}",
            proc.output()
        );
        Envoy {
            port,
            admin,
            proc,
            config,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A stat's value from the admin interface (`None` when Envoy does not have it yet).
    pub fn stat(&self, name: &str) -> Option<u64> {
        let r = crate::http::get(
            &format!("http://127.0.0.1:{}/stats?filter=^{name}$", self.admin),
            &[],
        );
        r.body.lines().find_map(|l| {
            let (k, v) = l.split_once(": ")?;
            (k == name).then(|| v.trim().parse().ok()).flatten()
        })
    }

    /// The JSON access-log lines Envoy printed so far.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        self.proc
            .output()
            .lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until the filter has a snapshot: an unauthenticated request gets 401, not 503.
    pub fn wait_ready(&self) {
        let ok = wait_for(Duration::from_secs(20), || {
            let r = crate::http::try_send("GET", &self.url("/api/tags"), &[], None).ok()?;
            (r.status == 401).then_some(())
        });
        assert!(
            ok.is_some(),
            "the filter never loaded a snapshot; Envoy output:\n{}",
            self.proc.output()
        );
    }
}

/// Sets `key` to the JSON `value` in the filter's plugin configuration inside a rendered
/// bootstrap (where the JSON sits escaped in a YAML string), adding the key if absent.
pub fn plugin_set(yaml: &str, key: &str, value: &str) -> String {
    let value = value.replace('"', "\\\"");
    let needle = format!("\\\"{key}\\\": ");
    if let Some(start) = yaml.find(&needle) {
        let from = start + needle.len();
        let rest = &yaml[from..];
        let end = rest
            .find(", \\\"")
            .or_else(|| rest.find('}'))
            .expect("plugin JSON value end");
        format!("{}{value}{}", &yaml[..from], &rest[end..])
    } else {
        let anchor = "value: \"{";
        let at = yaml.find(anchor).expect("plugin configuration in the YAML") + anchor.len();
        format!("{}{needle}{value}, {}", &yaml[..at], &yaml[at..])
    }
}
