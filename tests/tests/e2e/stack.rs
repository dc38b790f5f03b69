//! The real stack: keyd (SQLite) + keyctl + fake Ollama + Envoy configured by
//! `keyctl config envoy`.

use keygate_e2e::envoy::{port_of, Envoy};
use keygate_e2e::fake_ollama::FakeOllama;
use keygate_e2e::keyd::{Keyctl, Keyd};
use keygate_e2e::proc::free_port;
use keygate_e2e::tools;
use std::path::{Path, PathBuf};

pub struct Real {
    pub ollama: FakeOllama,
    pub keyd: Keyd,
    pub keyctl: Keyctl,
    pub envoy: Envoy,
    pub envoy_bin: PathBuf,
    pub wasm: PathBuf,
    // Last: removed after every process above is killed.
    pub dir: tempfile::TempDir,
}

impl Real {
    /// `None` (test skipped) when a program is missing outside CI.
    pub fn start(edit: impl FnOnce(String) -> String) -> Option<Real> {
        let envoy_bin = tools::envoy()?;
        let wasm = tools::wasm()?;
        let keyd_bin = tools::keyd()?;
        let keyctl_bin = tools::keyctl()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let ollama = FakeOllama::start(dir.path(), &["--loopback-host-check"]);
        let keyd = Keyd::start(&keyd_bin, dir.path());
        let keyctl = Keyctl {
            bin: keyctl_bin,
            url: keyd.url(),
        };
        let (yaml, port, admin) = prepare(&keyctl, &ollama, &keyd, &wasm, edit);
        let envoy = Envoy::start_yaml(&envoy_bin, dir.path(), &yaml, port, admin);
        envoy.wait_ready();
        Some(Real {
            envoy,
            ollama,
            keyd,
            keyctl,
            envoy_bin,
            wasm,
            dir,
        })
    }

    /// A bootstrap from `keyctl config envoy` for fresh ports: (yaml, listener, admin).
    pub fn prepare_envoy(&self, edit: impl FnOnce(String) -> String) -> (String, u16, u16) {
        prepare(&self.keyctl, &self.ollama, &self.keyd, &self.wasm, edit)
    }

    pub fn start_prepared(&self, (yaml, port, admin): &(String, u16, u16)) -> Envoy {
        Envoy::start_yaml(&self.envoy_bin, self.dir.path(), yaml, *port, *admin)
    }

    pub fn url(&self, path: &str) -> String {
        self.envoy.url(path)
    }

    /// Waits until `envoy`'s filter holds keyd's current version (keys just issued are
    /// known). Returns how long that took.
    pub fn synced_with(&self, envoy: &Envoy) -> std::time::Duration {
        let start = std::time::Instant::now();
        let want = keygate_e2e::http::get(&format!("{}/healthz", self.keyd.url()), &[]).json()
            ["version"]
            .as_u64()
            .expect("keyd /healthz version");
        let ok = keygate_e2e::proc::wait_for(std::time::Duration::from_secs(10), || {
            (envoy.stat("wasmcustom.keygate.snapshot_version")? >= want).then_some(())
        });
        assert!(
            ok.is_some(),
            "Envoy never reached keyd's version {want}:\n{}",
            envoy.proc.output()
        );
        start.elapsed()
    }

    pub fn synced(&self) -> std::time::Duration {
        self.synced_with(&self.envoy)
    }
}

fn prepare(
    keyctl: &Keyctl,
    ollama: &FakeOllama,
    keyd: &Keyd,
    wasm: &Path,
    edit: impl FnOnce(String) -> String,
) -> (String, u16, u16) {
    let listen = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let wasm = wasm.display().to_string();
    let yaml = keyctl.ok(&[
        "config",
        "envoy",
        "--listen",
        &listen,
        "--upstream",
        &ollama.url(),
        "--keyd",
        &keyd.url(),
        "--wasm",
        &wasm,
        "--admin",
        &admin,
    ]);
    (edit(yaml), port_of(&listen), port_of(&admin))
}
