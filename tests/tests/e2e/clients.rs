//! Streaming through the filter, and the real Python clients (`ollama`, `openai`).

use crate::stack::Real;
use keygate_e2e::http::{bearer, client};
use keygate_e2e::tools;
use serde_json::json;
use std::io::Read;
use std::time::{Duration, Instant};

/// Posts a streaming request and returns (time to first body bytes, time to end, body).
fn stream(url: &str, auth: &str, body: &serde_json::Value) -> (Duration, Duration, String) {
    let start = Instant::now();
    let mut r = client()
        .post(url)
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .expect("streaming request");
    assert_eq!(r.status().as_u16(), 200);
    let mut first = None;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = r.read(&mut buf).expect("read stream");
        if n == 0 {
            break;
        }
        first.get_or_insert(start.elapsed());
        out.extend_from_slice(&buf[..n]);
    }
    (
        first.unwrap_or_default(),
        start.elapsed(),
        String::from_utf8_lossy(&out).into_owned(),
    )
}

#[test]
fn streams_pass_through_unbuffered() {
    let Some(s) = Real::start(|y| y) else { return };
    let (_, key) = s.keyd.issue(json!({ "name": "streamer" }));
    s.synced();
    let auth = bearer(&key);
    let chat = json!({ "model": "llama3.2", "stream": true,
                       "messages": [{ "role": "user", "content": "why is the sky blue?" }] });
    // The fake sends 10 NDJSON chunks 50 ms apart.
    let (first, total, body) = stream(&s.url("/api/chat"), &auth, &chat);
    assert!(body.lines().count() >= 10, "{body}");
    assert!(
        first + Duration::from_millis(250) < total,
        "first NDJSON chunk after {first:?}, stream ended after {total:?}: buffered"
    );
    let (first, total, body) = stream(&s.url("/v1/chat/completions"), &auth, &chat);
    assert!(body.contains("data: [DONE]"), "{body}");
    assert!(
        first + Duration::from_millis(250) < total,
        "first SSE event after {first:?}, stream ended after {total:?}: buffered"
    );
    eprintln!("streaming: first chunk {first:?}, end {total:?}");
}

const CLIENTS: &str = r#"
import os, sys, ollama, openai
host, key, mode = sys.argv[1], sys.argv[2], sys.argv[3]
if mode == "headers":
    c = ollama.Client(host=host, headers={"Authorization": "Bearer " + key})
else:
    os.environ["OLLAMA_API_KEY"] = key
    c = ollama.Client(host=host)
names = [m.model for m in c.list().models]
assert "llama3.2:latest" in names, names
r = c.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
assert r.message.content, r
parts = [p.message.content for p in c.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}], stream=True)]
assert len(parts) > 1 and "".join(parts), parts
g = c.generate(model="llama3.2", prompt="hi")
assert g.response, g
e = c.embed(model="nomic-embed-text", input="hi")
assert len(e.embeddings) == 1 and len(e.embeddings[0]) > 0, e
try:
    ollama.Client(host=host, headers={"Authorization": "Bearer kg_wrong"}).list()
    raise SystemExit("a wrong key was accepted")
except ollama.ResponseError as err:
    assert err.status_code == 401, err

o = openai.OpenAI(base_url=host + "/v1", api_key=key)
assert any(m.id == "llama3.2:latest" for m in o.models.list().data)
r = o.chat.completions.create(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
assert r.choices[0].message.content, r
chunks = [ch.choices[0].delta.content or "" for ch in o.chat.completions.create(
    model="llama3.2", messages=[{"role": "user", "content": "hi"}], stream=True) if ch.choices]
assert len(chunks) > 1 and "".join(chunks), chunks
c2 = o.completions.create(model="llama3.2", prompt="hi")
assert c2.choices[0].text, c2
emb = o.embeddings.create(model="nomic-embed-text", input="hi")
assert len(emb.data[0].embedding) > 0, emb
try:
    openai.OpenAI(base_url=host + "/v1", api_key="kg_wrong").models.list()
    raise SystemExit("a wrong key was accepted")
except openai.AuthenticationError as err:
    assert err.status_code == 401, err
print("CLIENTS OK", mode)
"#;

#[test]
fn real_python_clients_work_through_envoy() {
    let Some(python) = tools::python() else {
        return;
    };
    let Some(s) = Real::start(|y| y) else { return };
    let (id, key) = s.keyd.issue(json!({ "name": "python" }));
    s.synced();
    let script = s.dir.path().join("clients.py");
    std::fs::write(&script, CLIENTS).expect("write clients.py");
    for mode in ["headers", "env"] {
        let out = std::process::Command::new(&python)
            .arg(&script)
            .args([&s.url(""), &key, mode])
            .env_remove("OLLAMA_API_KEY")
            .env_remove("OPENAI_API_KEY")
            .output()
            .expect("run python");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.contains("CLIENTS OK"),
            "{mode}: {text}"
        );
    }
    let seen = s.ollama.requests();
    assert!(seen.len() >= 20, "{}", seen.len());
    for r in &seen {
        assert_eq!(r.header("authorization"), None, "{r:?}");
        assert_eq!(r.header("x-keygate-key-id").as_deref(), Some(id.as_str()));
    }
}
