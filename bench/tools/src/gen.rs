//! Key sets, signed snapshots, tokens and JWKS for the benchmark, built with keygate-core
//! so they are byte-for-byte what keyd would publish.

use crate::args::Args;
use crate::error::{file, Error, Result};
use crate::rng::Rng;
use keygate_core::apikey::{ApiKey, KeyId};
use keygate_core::policy::Policy;
use keygate_core::snapshot::{
    encode_public_key, KeyKind, KeyRecord, KeyStatus, SigningPub, Snapshot, SnapshotSigner,
};
use keygate_core::token::{jwk_for, kid_for, Claims, TokenSigner};
use std::io::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The snapshot version the stand-in server publishes.
pub const VERSION: u64 = 1;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The snapshot signer and token signer for `seed`.
pub fn signers(seed: u64) -> (SnapshotSigner, TokenSigner) {
    let snap = SnapshotSigner::from_seed(Rng::new(seed, "snapshot-signer").bytes());
    let token_seed = Rng::new(seed, "token-signer").bytes();
    let kid = kid_for(&TokenSigner::from_seed("", token_seed).verifying_key());
    (snap, TokenSigner::from_seed(kid, token_seed))
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(file(path))
}

/// `kgbench keys`: `count` API keys in a signed full snapshot (`snapshot.bin`), the first
/// `export` key texts in `apikeys.txt` (`id key` per line), and `info.json`.
pub fn keys(a: &Args) -> Result<()> {
    let dir = a.dir()?;
    let count = a.num("count", 1000)?;
    let seed = a.num("seed", 1)?;
    let export = a.num("export", 0)?;
    if count == 0 {
        return Err(Error::Usage("--count must be at least 1".into()));
    }
    std::fs::create_dir_all(&dir).map_err(file(&dir))?;
    let (snap_signer, token_signer) = signers(seed);
    let mut rng = Rng::new(seed, "keys");
    let cap = usize::try_from(count).unwrap_or(usize::MAX);
    let mut records = Vec::with_capacity(cap);
    let exported_path = dir.join("apikeys.txt");
    let mut exported = std::io::BufWriter::new(
        std::fs::File::create(&exported_path).map_err(file(&exported_path))?,
    );
    let mut first: Option<ApiKey> = None;
    for i in 0..count {
        let id = KeyId::from_random(rng.bytes());
        let key = ApiKey::generate(&id, rng.bytes());
        if i < export {
            writeln!(exported, "{} {}", id, key.expose_secret()).map_err(file(&exported_path))?;
        }
        records.push(KeyRecord {
            id: id.as_str().to_owned(),
            name: format!("bench-{i}"),
            kind: KeyKind::ApiKey,
            digest: key.digest().0,
            previous: None,
            status: KeyStatus::Active,
            expires_at: None,
            policy: Policy::default(),
        });
        if first.is_none() {
            first = Some(key);
        }
    }
    exported.flush().map_err(file(&exported_path))?;
    let first = first.ok_or_else(|| Error::Usage("no key generated".into()))?;
    let mut snapshot = Snapshot {
        version: VERSION,
        issued_at: now(),
        signing_keys: vec![SigningPub {
            kid: token_signer.kid.clone(),
            key: token_signer.verifying_key().to_bytes(),
        }],
        keys: records,
        revoked_tokens: Vec::new(),
    };
    snapshot.canonicalize();
    let bytes = snap_signer.sign_full(&snapshot);
    write(&dir.join("snapshot.bin"), &bytes)?;
    let info = serde_json::json!({
        "count": count,
        "seed": seed,
        "version": VERSION,
        "snapshot_bytes": bytes.len(),
        "snapshot_public_key": encode_public_key(&snap_signer.verifying_key()),
        "token_kid": token_signer.kid,
        "first_key_id": first.id().as_str(),
        "first_key": first.expose_secret(),
    });
    write(&dir.join("info.json"), info.to_string().as_bytes())?;
    println!(
        "{} keys, snapshot {} bytes in {}",
        count,
        bytes.len(),
        dir.display()
    );
    Ok(())
}

/// `kgbench tokens`: `count` distinct EdDSA tokens for the directory's first key
/// (`tokens.txt`, one per line) and the signer's JWKS (`jwks.json`).
pub fn tokens(a: &Args) -> Result<()> {
    let dir = a.dir()?;
    let count = a.num("count", 1)?;
    let seed = a.num("seed", 1)?;
    let ttl = i64::try_from(a.num("ttl", 4 * 3600)?)
        .map_err(|_| Error::Usage("--ttl is too large".into()))?;
    let iss = a.str("iss").unwrap_or("keyd").to_owned();
    let info_path = dir.join("info.json");
    let info: serde_json::Value = std::fs::read(&info_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| Error::Info(format!("cannot read {}", info_path.display())))?;
    let sub = info
        .get("first_key_id")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| Error::Info(format!("{} has no first_key_id", info_path.display())))?
        .to_owned();
    let (_, signer) = signers(seed);
    let mut rng = Rng::new(seed, "jti");
    let t = now();
    let path = dir.join("tokens.txt");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).map_err(file(&path))?);
    for i in 0..count {
        let claims = Claims {
            iss: iss.clone(),
            sub: sub.clone(),
            iat: t - 10,
            exp: t + ttl,
            nbf: None,
            jti: format!("b{i}x{:016x}", rng.next_u64()),
            scope: vec!["inference".into(), "read".into()],
            models: Vec::new(),
        };
        writeln!(out, "{}", signer.mint(&claims)).map_err(file(&path))?;
    }
    out.flush().map_err(file(&path))?;
    let jwks = serde_json::json!({ "keys": [jwk_for(&signer.kid, &signer.verifying_key())] });
    write(&dir.join("jwks.json"), jwks.to_string().as_bytes())?;
    println!("{count} tokens for key {sub} in {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_core::snapshot::{decode, parse_public_key, MemStore, DEFAULT_MAX_LEN};
    use keygate_core::verify::{authenticate, Credential, EngineConfig, Via};

    fn args(pairs: &[(&str, String)]) -> Args {
        let argv: Vec<String> = pairs
            .iter()
            .flat_map(|(k, v)| [format!("--{k}"), v.clone()])
            .collect();
        Args::parse(&argv).unwrap()
    }

    fn read_json(path: &Path) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    /// What the runner relies on: the snapshot verifies against the printed public key, the
    /// first key and every token authenticate through keygate-core's engine, the JWKS holds
    /// the token signer, and a second run with the same seed makes the same first key.
    #[test]
    fn generated_material_passes_keygate_core() {
        let dir = std::env::temp_dir().join(format!("kgbench-test-{}", std::process::id()));
        let dir_s = dir.display().to_string();
        keys(&args(&[
            ("dir", dir_s.clone()),
            ("count", "50".into()),
            ("export", "10".into()),
            ("seed", "3".into()),
        ]))
        .unwrap();
        tokens(&args(&[
            ("dir", dir_s.clone()),
            ("count", "5".into()),
            ("seed", "3".into()),
        ]))
        .unwrap();
        let info = read_json(&dir.join("info.json"));
        let pinned = parse_public_key(info["snapshot_public_key"].as_str().unwrap()).unwrap();
        let bytes = std::fs::read(dir.join("snapshot.bin")).unwrap();
        let mut store = MemStore::new();
        store
            .apply(decode(&bytes, &[pinned], DEFAULT_MAX_LEN).unwrap())
            .unwrap();
        assert_eq!(store.len(), 50);
        let now = now();
        let cfg = EngineConfig::default();
        let first = info["first_key"].as_str().unwrap();
        let p = authenticate(
            &Credential::Secret(first.into()),
            "GET",
            "/api/tags",
            &store,
            now,
            &cfg,
        )
        .unwrap();
        assert_eq!(p.key_id, info["first_key_id"].as_str().unwrap());
        assert_eq!(p.via, Via::ApiKey);
        let exported = std::fs::read_to_string(dir.join("apikeys.txt")).unwrap();
        assert_eq!(exported.lines().count(), 10);
        assert!(exported.lines().next().unwrap().ends_with(first));
        let toks = std::fs::read_to_string(dir.join("tokens.txt")).unwrap();
        let toks: Vec<&str> = toks.lines().collect();
        assert_eq!(toks.len(), 5);
        assert_eq!(
            toks.iter().collect::<std::collections::HashSet<_>>().len(),
            5
        );
        for t in &toks {
            let p = authenticate(
                &Credential::Secret((*t).into()),
                "GET",
                "/api/tags",
                &store,
                now,
                &cfg,
            )
            .unwrap();
            assert_eq!(p.via, Via::Token);
        }
        let jwks = read_json(&dir.join("jwks.json"));
        assert_eq!(jwks["keys"][0]["kid"], info["token_kid"]);
        let again = dir.join("again");
        keys(&args(&[
            ("dir", again.display().to_string()),
            ("count", "1".into()),
            ("seed", "3".into()),
        ]))
        .unwrap();
        assert_eq!(read_json(&again.join("info.json"))["first_key"], first);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
