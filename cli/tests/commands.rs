//! Every keyctl command against a real keyd process: human output, `--quiet`, `--json`
//! field names, and the exit code of each failure class.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{dead_port, Keyctl, Keyd, ADMIN_TOKEN, OLLAMA_PUB};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

fn fields(v: &Value) -> Vec<&str> {
    let mut f: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    f.sort_unstable();
    f
}

fn issue(keyd: &Keyd, name: &str) -> (String, String) {
    let v = keyd
        .keyctl()
        .run(&["issue", "--name", name, "--json"])
        .ok()
        .json();
    (
        v["id"].as_str().unwrap().to_owned(),
        v["key"].as_str().unwrap().to_owned(),
    )
}

fn time_of(v: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(v.as_str().unwrap(), &Rfc3339).unwrap()
}

const KEY_FIELDS: [&str; 14] = [
    "burst",
    "created_at",
    "expires_at",
    "id",
    "kind",
    "models",
    "name",
    "old_valid_until",
    "rate",
    "revoke_reason",
    "revoked_at",
    "rotated_at",
    "routes",
    "status",
];

#[test]
fn issue_prints_the_key_once_in_every_mode() {
    let keyd = Keyd::start();
    let out = keyd
        .keyctl()
        .run(&[
            "issue",
            "--name",
            "ci runner",
            "--routes",
            "inference",
            "--models",
            "llama3*,qwen2.5:7b",
            "--rate",
            "10/s",
            "--burst",
            "20",
            "--expires-in",
            "30d",
            "--json",
        ])
        .ok();
    let v = out.json();
    assert_eq!(
        fields(&v),
        [
            "burst",
            "expires_at",
            "id",
            "key",
            "models",
            "name",
            "rate",
            "routes"
        ]
    );
    assert_eq!(v["name"], "ci runner");
    assert_eq!(v["routes"], serde_json::json!(["inference"]));
    assert_eq!(v["models"], serde_json::json!(["llama3*", "qwen2.5:7b"]));
    assert_eq!(v["rate"], "10/s");
    assert_eq!(v["burst"], 20);
    let key = v["key"].as_str().unwrap();
    let parsed = keygate_core::apikey::ParsedKey::parse(key).expect("a valid kg_ key");
    assert_eq!(parsed.id(), v["id"].as_str().unwrap());
    let expires = time_of(&v["expires_at"]) - OffsetDateTime::now_utc();
    assert!((29..=30).contains(&expires.whole_days()), "{expires}");

    let quiet = keyd.keyctl().run(&["issue", "--name", "q", "--quiet"]).ok();
    let lines: Vec<&str> = quiet.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{}", quiet.stdout);
    assert!(keygate_core::apikey::ParsedKey::parse(lines[0]).is_ok());

    let human = keyd.keyctl().run(&["issue", "--name", "laptop"]).ok();
    assert!(human.stdout.starts_with("Issued key "), "{}", human.stdout);
    assert!(human.stdout.contains("(laptop)"));
    assert!(human.stdout.contains("routes   inference,read"));
    assert!(human.stdout.contains("rate     unlimited"));
    assert!(human.stdout.contains("expires  never"));
    let last = human.stdout.lines().last().unwrap();
    assert!(
        keygate_core::apikey::ParsedKey::parse(last).is_ok(),
        "{last}"
    );
}

#[test]
fn list_show_and_filters() {
    let keyd = Keyd::start();
    let (a, _) = issue(&keyd, "alpha");
    let (b, _) = issue(&keyd, "beta");
    keyd.keyctl().run(&["revoke", &b]).ok();

    let table = keyd.keyctl().run(&["list"]).ok().stdout;
    let header = table.lines().next().unwrap();
    for col in [
        "ID", "NAME", "STATUS", "ROUTES", "MODELS", "RATE", "EXPIRES", "CREATED", "ROTATED",
    ] {
        assert!(header.contains(col), "{header}");
    }
    assert!(table.contains(&a) && table.contains("alpha"));
    assert!(
        !table.contains(&b),
        "revoked keys only with --all:\n{table}"
    );

    let all = keyd.keyctl().run(&["list", "--all", "--json"]).ok().json();
    let arr = all.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    for k in arr {
        assert_eq!(fields(k), KEY_FIELDS);
    }
    let beta = arr.iter().find(|k| k["id"] == b.as_str()).unwrap();
    assert_eq!(beta["status"], "revoked");
    let ids: Vec<&str> = arr.iter().map(|k| k["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted, "keys come in id order");

    let quiet = keyd.keyctl().run(&["list", "--quiet"]).ok().stdout;
    assert_eq!(quiet.trim(), a);

    let empty = Keyd::start();
    assert_eq!(
        empty.keyctl().run(&["list", "--json"]).ok().json(),
        serde_json::json!([])
    );

    let show = keyd.keyctl().run(&["show", &a, "--json"]).ok().json();
    assert_eq!(fields(&show), KEY_FIELDS);
    assert_eq!(show["name"], "alpha");
    assert_eq!(show["kind"], "api_key");
    let human = keyd.keyctl().run(&["show", &a]).ok().stdout;
    assert!(human.contains(&format!("id              {a}")), "{human}");
    assert!(human.contains("status          active"));
}

#[test]
fn rotate_returns_a_new_key_and_grace() {
    let keyd = Keyd::start();
    let (id, old) = issue(&keyd, "r");
    let v = keyd
        .keyctl()
        .run(&["rotate", &id, "--grace", "2h", "--json"])
        .ok()
        .json();
    assert_eq!(fields(&v), ["id", "key", "old_valid_until"]);
    assert_eq!(v["id"], id.as_str());
    assert_ne!(v["key"], old.as_str());
    let grace = time_of(&v["old_valid_until"]) - OffsetDateTime::now_utc();
    assert!((115..=121).contains(&grace.whole_minutes()), "{grace}");
    let quiet = keyd.keyctl().run(&["rotate", &id, "--quiet"]).ok().stdout;
    assert!(keygate_core::apikey::ParsedKey::parse(quiet.trim()).is_ok());
    let human = keyd.keyctl().run(&["rotate", &id]).ok().stdout;
    assert!(human.contains("old secret keeps working until"), "{human}");
    let shown = keyd.keyctl().run(&["show", &id, "--json"]).ok().json();
    assert!(shown["rotated_at"].is_string());
}

#[test]
fn revoke_then_revoke_again_is_a_conflict() {
    let keyd = Keyd::start();
    let (id, _) = issue(&keyd, "rv");
    let v = keyd
        .keyctl()
        .run(&["revoke", &id, "--reason", "laptop stolen", "--json"])
        .ok()
        .json();
    assert_eq!(v, serde_json::json!({"id": id, "status": "revoked"}));
    let again = keyd.keyctl().run(&["revoke", &id]);
    assert_eq!(again.code, 6, "{}", again.stderr);
    assert!(again.stderr.starts_with("keyctl: ") && again.stderr.lines().count() == 1);
    let shown = keyd.keyctl().run(&["show", &id, "--json"]).ok().json();
    assert_eq!(shown["revoke_reason"], "laptop stolen");
    let (id2, _) = issue(&keyd, "rv2");
    let human = keyd.keyctl().run(&["revoke", &id2]).ok().stdout;
    assert!(human.starts_with(&format!("Revoked key {id2}")), "{human}");
}

#[test]
fn token_is_a_jwt_with_the_requested_lifetime() {
    let keyd = Keyd::start();
    let (id, _) = issue(&keyd, "t");
    let v = keyd
        .keyctl()
        .run(&["token", &id, "--ttl", "10m", "--json"])
        .ok()
        .json();
    assert_eq!(fields(&v), ["expires_at", "jti", "token"]);
    assert_eq!(v["token"].as_str().unwrap().split('.').count(), 3);
    let ttl = time_of(&v["expires_at"]) - OffsetDateTime::now_utc();
    assert!((9..=10).contains(&ttl.whole_minutes()), "{ttl}");
    let quiet = keyd.keyctl().run(&["token", &id, "--quiet"]).ok().stdout;
    assert_eq!(quiet.lines().count(), 1);
    assert_eq!(quiet.trim().split('.').count(), 3);
    let human = keyd.keyctl().run(&["token", &id]).ok().stdout;
    assert!(
        human.lines().nth(1).unwrap().starts_with("expires "),
        "{human}"
    );
}

#[test]
fn audit_lists_filters_and_verifies() {
    let keyd = Keyd::start();
    let (a, _) = issue(&keyd, "a");
    let (b, _) = issue(&keyd, "b");
    keyd.keyctl().run(&["revoke", &b]).ok();

    let table = keyd.keyctl().run(&["audit"]).ok().stdout;
    assert!(table.lines().next().unwrap().starts_with("SEQ"));
    assert!(table.contains("key.issue") && table.contains("key.revoke"));

    let lines = keyd.keyctl().run(&["audit", "--json"]).ok().stdout;
    let entries: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(entries.len() >= 3);
    for e in &entries {
        assert_eq!(
            fields(e),
            [
                "action",
                "actor",
                "at",
                "detail",
                "hash",
                "key_id",
                "prev_hash",
                "seq"
            ]
        );
    }
    for pair in entries.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"], "chain links");
    }

    let revokes = keyd
        .keyctl()
        .run(&["audit", "--action", "key.revoke", "--json"])
        .ok()
        .stdout;
    assert_eq!(revokes.lines().count(), 1);
    assert!(revokes.contains(&b));
    let for_a = keyd
        .keyctl()
        .run(&["audit", "--key", &a, "--json"])
        .ok()
        .stdout;
    assert!(for_a.lines().count() >= 1);
    assert!(for_a
        .lines()
        .all(|l| serde_json::from_str::<Value>(l).unwrap()["key_id"] == a.as_str()));
    let recent = keyd
        .keyctl()
        .run(&["audit", "--since", "1h", "--quiet"])
        .ok()
        .stdout;
    assert_eq!(recent.lines().count(), entries.len());
    let future = keyd
        .keyctl()
        .run(&["audit", "--since", "2999-01-01", "--json"])
        .ok()
        .stdout;
    assert!(future.is_empty(), "{future}");

    let ok = keyd.keyctl().run(&["audit", "--verify"]).ok().stdout;
    assert!(ok.contains("intact"), "{ok}");
    let v = keyd
        .keyctl()
        .run(&["audit", "--verify", "--json"])
        .ok()
        .json();
    assert_eq!(v["ok"], true);
    assert_eq!(v["first_broken"], Value::Null);
    assert!(v["entries"].as_u64().unwrap() >= 3);

    // Edit an entry behind keyd's back: --verify must exit 7 and name it.
    let seq = entries[2]["seq"].as_u64().unwrap();
    let status = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); \
             c.execute(\"UPDATE audit SET detail='{\\\"edited\\\":true}' WHERE seq=?\", (int(sys.argv[2]),)); \
             c.commit()",
            keyd.db_path().to_str().unwrap(),
            &seq.to_string(),
        ])
        .status()
        .expect("python3 edits the audit table");
    assert!(status.success());
    let broken = keyd.keyctl().run(&["audit", "--verify"]);
    assert_eq!(broken.code, 7, "{}{}", broken.stdout, broken.stderr);
    assert!(
        broken.stderr.contains(&format!("entry {seq}")) && broken.stderr.contains("hash_mismatch"),
        "{}",
        broken.stderr
    );
    let broken_json = keyd.keyctl().run(&["audit", "--verify", "--json"]);
    assert_eq!(broken_json.code, 7);
    assert_eq!(broken_json.json()["first_broken"]["seq"], seq);
}

#[test]
fn signing_key_rotation() {
    let keyd = Keyd::start();
    let v = keyd
        .keyctl()
        .run(&["signing-key", "rotate", "--json"])
        .ok()
        .json();
    assert_eq!(fields(&v), ["kid", "public_key", "which"]);
    assert_eq!(v["which"], "token");
    assert!(v["kid"].is_string());
    let s = keyd
        .keyctl()
        .run(&["signing-key", "rotate", "--which", "snapshot", "--json"])
        .ok()
        .json();
    assert_eq!(s["which"], "snapshot");
    assert_ne!(s["public_key"], v["public_key"]);
    let human = keyd.keyctl().run(&["signing-key", "rotate"]).ok().stdout;
    assert!(
        human.starts_with("Rotated the token signing key"),
        "{human}"
    );
    let bad = keyd
        .keyctl()
        .run(&["signing-key", "rotate", "--which", "both"]);
    assert_eq!(bad.code, 2);
}

#[test]
fn register_an_ollama_public_key() {
    let keyd = Keyd::start();
    let v = keyd
        .keyctl()
        .run(&[
            "register",
            "--name",
            "alice",
            "--public-key",
            OLLAMA_PUB,
            "--rate",
            "5/s",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(fields(&v), KEY_FIELDS);
    assert_eq!(v["kind"], "ollama_key");
    assert_eq!(v["rate"], "5/s");
    let id = v["id"].as_str().unwrap();
    let again = keyd
        .keyctl()
        .run(&["register", "--name", "again", "--public-key", OLLAMA_PUB]);
    assert_eq!(again.code, 6, "{}", again.stderr);

    // From a .pub file, as `ollama` writes it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("id_ed25519.pub");
    let other =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHdECi/gIdb79ytWM7lC1Ll2fxTxhOfuaUzV4foML2BM bob";
    std::fs::write(&file, format!("{other}\n")).unwrap();
    let human = keyd
        .keyctl()
        .run(&[
            "register",
            "--name",
            "bob",
            "--public-key",
            file.to_str().unwrap(),
        ])
        .ok()
        .stdout;
    assert!(human.contains("kind            ollama_key"), "{human}");

    let listed = keyd.keyctl().run(&["list", "--json"]).ok().json();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    keyd.keyctl().run(&["revoke", id]).ok();
    let audit = keyd
        .keyctl()
        .run(&["audit", "--action", "publickey.register", "--quiet"])
        .ok()
        .stdout;
    assert_eq!(audit.lines().count(), 2);
}

#[test]
fn config_envoy_gets_a_filter_credential_from_keyd() {
    let keyd = Keyd::start();
    let out = keyd.keyctl().run(&[
        "config",
        "envoy",
        "--listen",
        "127.0.0.1:8080",
        "--keyd",
        &keyd.url,
        "--wasm",
        "/opt/keygate/keygate_filter.wasm",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("keygate_filter.wasm"));
    assert!(out.stderr.contains("filter credential"), "{}", out.stderr);
    let audit = keyd
        .keyctl()
        .run(&["audit", "--action", "filter_credential.create", "--quiet"])
        .ok()
        .stdout;
    assert_eq!(audit.lines().count(), 1);

    // With the credential given, keyd is not asked (it may be unreachable). One base64url
    // key in 64 starts with '-': it is a value, not an option.
    for key in ["A".repeat(43), format!("-Z{}", "A".repeat(41))] {
        let offline = Keyctl::new()
            .env("KEYD_URL", format!("http://127.0.0.1:{}", dead_port()))
            .run(&[
                "config",
                "envoy",
                "--listen",
                "127.0.0.1:8080",
                "--wasm",
                "/x.wasm",
                "--filter-credential",
                "kgf_test_credential",
                "--snapshot-key",
                &key,
            ]);
        assert_eq!(offline.code, 0, "{key}: {}", offline.stderr);
        assert!(offline.stdout.contains(&key), "{key}");
    }
}

#[test]
fn exit_codes_per_failure_class() {
    let keyd = Keyd::start();
    let (id, _) = issue(&keyd, "x");
    let dead = format!("http://127.0.0.1:{}", dead_port());

    // 3: keyd unreachable, one line that says what to do.
    let out = Keyctl::new()
        .env("KEYD_URL", &dead)
        .env("KEYD_ADMIN_TOKEN", ADMIN_TOKEN)
        .run(&["list"]);
    assert_eq!(out.code, 3);
    assert!(out.stdout.is_empty(), "nothing printed before the failure");
    assert_eq!(out.stderr.lines().count(), 1);
    assert!(out.stderr.contains("cannot reach keyd") && out.stderr.contains("--url"));
    for args in [
        &["issue", "--name", "n"][..],
        &["audit", "--verify"],
        &["show", &id],
    ] {
        let out = Keyctl::new()
            .env("KEYD_ADMIN_TOKEN", ADMIN_TOKEN)
            .run(&[&["--url", &dead][..], args].concat());
        assert_eq!(out.code, 3, "{args:?}: {}", out.stderr);
    }

    // 4: wrong token, and no token at all.
    let out = Keyctl::new()
        .env("KEYD_URL", &keyd.url)
        .env("KEYD_ADMIN_TOKEN", "wrong-token-0123456789")
        .run(&["list"]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(out.stderr.contains("admin token"));
    assert!(
        !out.stderr.contains("wrong-token"),
        "the token is never echoed"
    );
    let out = Keyctl::new().env("KEYD_URL", &keyd.url).run(&["list"]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(out.stderr.contains("keygate/admin-token"), "{}", out.stderr);
    let out = keyd
        .keyctl()
        .run(&["--admin-token", "nope-nope-nope-nope", "show", &id]);
    assert_eq!(out.code, 4);

    // 5: unknown id.
    let out = keyd.keyctl().run(&["show", "aaaaaaaaaaaa"]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    for args in [
        &["rotate", "aaaaaaaaaaaa"][..],
        &["revoke", "aaaaaaaaaaaa"],
        &["token", "aaaaaaaaaaaa"],
    ] {
        assert_eq!(keyd.keyctl().run(args).code, 5, "{args:?}");
    }

    // 2: invalid arguments, caught before any request (keyd unreachable would be 3).
    for args in [
        &["issue", "--name", "n", "--rate", "10/d"][..],
        &["issue", "--name", "n", "--routes", "root"],
        &["issue", "--name", "n", "--models", "bad name!"],
        &["issue", "--name", "n", "--expires-in", "1y"],
        &["issue", "--name", "n", "--burst", "5"],
        &["issue", "--name", ""],
        &["issue"],
        &["rotate", &id, "--grace", "0s"],
        &["token", &id, "--ttl", "forever"],
        &["show", "not-an-id"],
        &["show", "kg_abcdefghijkl_secretsecretsecret"],
        &["audit", "--since", "yesterday"],
        &["audit", "--action", "key.issued"],
        &["audit", "--verify", "--key", &id],
        &[
            "register",
            "--name",
            "n",
            "--public-key",
            "ssh-rsa AAAAB3 x",
        ],
        &["config", "nginx", "--listen", "localhost:80"],
        &["nonsense"],
        &["--url", "localhost:7433", "list"],
    ] {
        let out = Keyctl::new()
            .env("KEYD_URL", &dead)
            .env("KEYD_ADMIN_TOKEN", ADMIN_TOKEN)
            .run(args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(!out.stderr.is_empty());
        assert!(!out.stderr.contains("secretsecret"), "{}", out.stderr);
    }

    // keyd's own 400 is an invalid argument too.
    let out = keyd.keyctl().run(&["token", &id, "--ttl", "30d"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
}

#[test]
fn admin_token_sources() {
    let keyd = Keyd::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{ADMIN_TOKEN}\n")).unwrap();
    Keyctl::new()
        .env("KEYD_URL", &keyd.url)
        .run(&["list", "--admin-token-file", file.to_str().unwrap()])
        .ok();
    // The file beats a wrong token in the environment.
    Keyctl::new()
        .env("KEYD_URL", &keyd.url)
        .env("KEYD_ADMIN_TOKEN", "wrong-token-0123456789")
        .run(&["--admin-token-file", file.to_str().unwrap(), "list"])
        .ok();
    Keyctl::new()
        .env("KEYD_URL", &keyd.url)
        .run(&["--admin-token", ADMIN_TOKEN, "list"])
        .ok();
    // The file keyd writes beside its default database.
    let k = Keyctl::new();
    let data = k.home().join("data").join("keygate");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("admin-token"), ADMIN_TOKEN).unwrap();
    k.env("KEYD_URL", &keyd.url).run(&["list"]).ok();
}

#[test]
fn help_shows_an_example_for_every_command() {
    for cmd in [
        &["issue"][..],
        &["list"],
        &["show"],
        &["rotate"],
        &["revoke"],
        &["token"],
        &["audit"],
        &["signing-key", "rotate"],
        &["register"],
        &["config", "envoy"],
        &["config", "nginx"],
        &["config", "caddy"],
        &["certs", "init"],
    ] {
        let out = Keyctl::new().run(&[cmd, &["--help"]].concat());
        assert_eq!(out.code, 0, "{cmd:?}");
        let example = format!("keyctl {}", cmd.join(" "));
        assert!(out.stdout.contains("Example"), "{cmd:?}:\n{}", out.stdout);
        assert!(
            out.stdout.contains(&example),
            "{cmd:?} example:\n{}",
            out.stdout
        );
    }
}
