//! The fake Ollama (`tests/fake_ollama/fake_ollama.py`) as a child process.

use crate::proc::{wait_for, Proc};
use crate::tools;
use std::process::Command;
use std::time::Duration;

#[derive(Debug)]
pub struct FakeOllama {
    pub port: u16,
    pub proc: Proc,
}

/// One request as the fake received it (header names lowercased).
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: serde_json::Map<String, serde_json::Value>,
    pub body: String,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    }
}

impl FakeOllama {
    /// Starts the fake with `extra` flags (e.g. `--loopback-host-check`, `--chunk-delay`).
    pub fn start(dir: &std::path::Path, extra: &[&str]) -> FakeOllama {
        let port_file = dir.join("fake-ollama.port");
        let _ = std::fs::remove_file(&port_file);
        let mut cmd = Command::new(tools::python3());
        cmd.arg(tools::repo_root().join("tests/fake_ollama/fake_ollama.py"))
            .args(["--listen", "127.0.0.1:0", "--port-file"])
            .arg(&port_file)
            .args(extra);
        let proc = Proc::spawn("fake-ollama", cmd, dir);
        let port = wait_for(Duration::from_secs(10), || {
            std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.trim().parse::<u16>().ok())
        })
        .unwrap_or_else(|| panic!("fake Ollama did not start: {}", proc.output()));
        FakeOllama { port, proc }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Seen> {
        let r = crate::http::get(&format!("{}/__fake/requests", self.url()), &[]);
        let v = r.json();
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|e| Seen {
                        method: e["method"].as_str().unwrap_or_default().to_owned(),
                        path: e["path"].as_str().unwrap_or_default().to_owned(),
                        headers: e["headers"].as_object().cloned().unwrap_or_default(),
                        body: e["body"].as_str().unwrap_or_default().to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn reset(&self) {
        crate::http::send(
            "POST",
            &format!("{}/__fake/reset", self.url()),
            &[],
            Some(b""),
        );
    }
}
