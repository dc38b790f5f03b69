//! Test harness: a real keyd process on a loopback port chosen at run time, and keyctl run
//! as a real process against it. Everything is bounded in time and killed on drop.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";
/// Issue 10's first vector: a registered Ollama public key.
pub const OLLAMA_PUB: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBLJHgRwzfX+x/9E45PmoWajcmJZsz/DaZqcmG8/igMM alice@laptop";

pub fn keyctl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_keyctl"))
}

/// keyd's binary: `KEYD_BIN`, else built with cargo next to keyctl (same profile).
pub fn keyd_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = keyd_bin_from_env() {
            return p;
        }
        let dir = keyctl_bin()
            .parent()
            .expect("keyctl has a directory")
            .to_owned();
        let release = dir.file_name().is_some_and(|n| n == "release");
        build_keyd(release, &dir)
    })
    .clone()
}

/// keyd as deployed (release profile): for timings that a debug build would distort.
/// `KEYD_BIN` if set; else `cargo build --release -p keyd` (a no-op after scripts/setup.sh).
pub fn release_keyd_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = keyd_bin_from_env() {
            return p;
        }
        let profile_dir = keyctl_bin()
            .parent()
            .expect("keyctl has a directory")
            .to_owned();
        let target = profile_dir.parent().expect("a target directory").to_owned();
        build_keyd(true, &target.join("release"))
    })
    .clone()
}

fn keyd_bin_from_env() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("KEYD_BIN")?);
    assert!(p.is_file(), "KEYD_BIN={} is not a file", p.display());
    Some(p)
}

fn build_keyd(release: bool, dir: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "keyd", "--quiet"])
        .current_dir(&workspace);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build -p keyd");
    assert!(status.success(), "cargo build -p keyd failed");
    let bin = dir.join("keyd");
    assert!(
        bin.is_file(),
        "{} missing after cargo build -p keyd",
        bin.display()
    );
    bin
}

/// A running keyd with its own SQLite database in a temporary directory.
pub struct Keyd {
    child: Child,
    pub url: String,
    pub dir: tempfile::TempDir,
}

impl Keyd {
    pub fn start() -> Self {
        Self::start_bin(&keyd_bin())
    }

    pub fn start_bin(bin: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}", dir.path().join("keyd.db").display());
        let stderr = std::fs::File::create(dir.path().join("keyd.stderr")).unwrap();
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--database", &db])
            .env("KEYD_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start keyd");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        // Keeps draining keyd's stdout so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening: ") {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let mut keyd = Self {
            child,
            url: String::new(),
            dir,
        };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => keyd.url = format!("http://{addr}"),
            Err(_) => panic!(
                "keyd did not print 'listening: ADDR' within 60 s; stderr:\n{}",
                keyd.stderr()
            ),
        }
        keyd
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("keyd.stderr")).unwrap_or_default()
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("keyd.db")
    }

    /// keyctl with `--url` and the admin token in the environment, nothing else inherited.
    pub fn keyctl(&self) -> Keyctl {
        Keyctl::new()
            .env("KEYD_URL", &self.url)
            .env("KEYD_ADMIN_TOKEN", ADMIN_TOKEN)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Keyd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A keyctl invocation with a clean environment (HOME points at an empty directory, so no
/// real token file is ever read).
pub struct Keyctl {
    cmd: Command,
    _home: tempfile::TempDir,
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "keyctl failed: {}{}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Keyctl {
    pub fn new() -> Self {
        let home = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(keyctl_bin());
        cmd.env_clear()
            .env("HOME", home.path())
            .env("XDG_DATA_HOME", home.path().join("data"))
            .stdin(Stdio::null());
        Self { cmd, _home: home }
    }

    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }

    pub fn home(&self) -> &Path {
        self._home.path()
    }

    /// Runs with a 60 s bound.
    pub fn run(mut self, args: &[&str]) -> Output {
        self.cmd
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self.cmd.spawn().expect("spawn keyctl");
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let t_out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let t_err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let status = wait_bounded(&mut child, Duration::from_secs(60), args);
        Output {
            code: status.code().unwrap_or(-1),
            stdout: t_out.join().unwrap(),
            stderr: t_err.join().unwrap(),
        }
    }

    pub fn command(self) -> (Command, tempfile::TempDir) {
        (self.cmd, self._home)
    }
}

impl Default for Keyctl {
    fn default() -> Self {
        Self::new()
    }
}

pub fn wait_bounded(child: &mut Child, limit: Duration, what: &[&str]) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A port nothing listens on (bound, then released).
pub fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An external program for a test: env `<NAME>_BIN`, then PATH. Missing: `None` when CI is
/// unset (the caller skips, saying why); a failing test when CI is set.
pub fn external(name: &str) -> Option<PathBuf> {
    let env = format!("{}_BIN", name.to_ascii_uppercase());
    if let Ok(p) = std::env::var(&env) {
        return Some(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    // Debian puts nginx in /usr/sbin, which a non-root PATH may lack.
    dirs.extend(["/usr/sbin", "/usr/bin"].map(PathBuf::from));
    let found = dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is required in CI: install it (apt-get install -y {name}) or set {env}"
        );
        eprintln!("SKIPPED: {name} not found (set {env} or install it); CI fails here instead");
    }
    found
}
