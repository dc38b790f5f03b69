//! keyd's JSON answers (docs/api.md), and the shapes keyctl prints with `--json`.
//!
//! keyctl re-serializes what it reads instead of passing keyd's bytes through, so its
//! `--json` output keeps exactly the documented fields even when keyd adds new ones.

use crate::secret::Secret;
use serde::{Deserialize, Serialize};

/// A key (API key or registered Ollama public key). Every field is always printed, `null`
/// when unset, so scripts can rely on the shape.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Key {
    pub id: String,
    #[serde(default = "api_key_kind")]
    pub kind: String,
    pub name: String,
    pub status: String,
    #[serde(default)]
    pub routes: Vec<String>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub rate: Option<String>,
    #[serde(default)]
    pub burst: Option<u32>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub rotated_at: Option<String>,
    #[serde(default)]
    pub old_valid_until: Option<String>,
    #[serde(default)]
    pub revoked_at: Option<String>,
    #[serde(default)]
    pub revoke_reason: Option<String>,
}

fn api_key_kind() -> String {
    "api_key".to_owned()
}

/// `POST /v1/keys`: the key object plus the secret, shown only here.
#[derive(Debug, Deserialize)]
pub struct IssuedKey {
    #[serde(flatten)]
    pub info: Key,
    pub key: Secret,
}

/// `keyctl issue --json`.
#[derive(Debug, Serialize)]
pub struct IssueOutput<'a> {
    pub id: &'a str,
    pub key: &'a Secret,
    pub name: &'a str,
    pub routes: &'a [String],
    pub models: &'a [String],
    pub rate: Option<&'a str>,
    pub burst: Option<u32>,
    pub expires_at: Option<&'a str>,
}

#[derive(Debug, Deserialize)]
pub struct KeyPage {
    pub keys: Vec<Key>,
    #[serde(default)]
    pub next: Option<String>,
}

/// `POST /v1/keys/{id}/rotate`, printed as is by `keyctl rotate --json`.
#[derive(Debug, Deserialize, Serialize)]
pub struct Rotated {
    pub id: String,
    pub key: Secret,
    #[serde(default)]
    pub old_valid_until: Option<String>,
}

/// `POST /v1/keys/{id}/revoke`, printed as is by `keyctl revoke --json`.
#[derive(Debug, Deserialize, Serialize)]
pub struct Revoked {
    pub id: String,
    pub status: String,
}

/// `POST /v1/keys/{id}/tokens`, printed as is by `keyctl token --json`.
#[derive(Debug, Deserialize, Serialize)]
pub struct Minted {
    pub token: Secret,
    pub expires_at: String,
    #[serde(default)]
    pub jti: Option<String>,
}

/// One audit log entry, printed as one JSON line by `keyctl audit --json`.
#[derive(Debug, Deserialize, Serialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub at: String,
    pub action: String,
    #[serde(default)]
    pub key_id: Option<String>,
    pub actor: String,
    #[serde(default)]
    pub detail: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, Deserialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    #[serde(default)]
    pub next: Option<u64>,
}

/// `GET /v1/audit/verify`, printed as is by `keyctl audit --verify --json`.
#[derive(Debug, Deserialize, Serialize)]
pub struct AuditVerify {
    pub ok: bool,
    pub entries: u64,
    #[serde(default)]
    pub first_broken: Option<BrokenEntry>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct BrokenEntry {
    pub seq: u64,
    pub reason: String,
}

/// `POST /v1/signing-keys/rotate`, printed as is by `keyctl signing-key rotate --json`.
#[derive(Debug, Deserialize, Serialize)]
pub struct SigningKeyRotated {
    pub which: String,
    #[serde(default)]
    pub kid: Option<String>,
    pub public_key: String,
}

/// `POST /v1/filter-credentials`.
#[derive(Debug, Deserialize)]
pub struct FilterCredential {
    pub id: String,
    pub credential: Secret,
    pub snapshot_public_keys: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_reads_the_documented_object_and_prints_every_field() {
        let v = serde_json::json!({
            "id": "abcdefghijkl", "kind": "api_key", "name": "n", "status": "active",
            "routes": ["inference"], "models": [], "rate": "10/s", "burst": 20,
            "expires_at": null, "created_at": "2026-01-01T00:00:00Z", "rotated_at": null,
            "old_valid_until": null, "revoked_at": null, "revoke_reason": null,
            "some_future_field": 1
        });
        let k: Key = serde_json::from_value(v).unwrap();
        let out = serde_json::to_value(&k).unwrap();
        let obj = out.as_object().unwrap();
        for f in [
            "id",
            "kind",
            "name",
            "status",
            "routes",
            "models",
            "rate",
            "burst",
            "expires_at",
            "created_at",
            "rotated_at",
            "old_valid_until",
            "revoked_at",
            "revoke_reason",
        ] {
            assert!(obj.contains_key(f), "{f}");
        }
        assert!(!obj.contains_key("some_future_field"));
    }

    #[test]
    fn issued_key_splits_secret_from_info() {
        let v = serde_json::json!({
            "id": "abcdefghijkl", "name": "n", "status": "active", "key": "kg_secret"
        });
        let k: IssuedKey = serde_json::from_value(v).unwrap();
        assert_eq!(k.key.expose(), "kg_secret");
        assert_eq!(k.info.kind, "api_key");
    }
}
