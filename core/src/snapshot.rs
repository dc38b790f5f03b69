//! Snapshots: everything a filter needs to decide, signed by keyd.
//!
//! Wire format (all integers big-endian; strings are one-byte-length-prefixed UTF-8):
//!
//! ```text
//! envelope := "KGSN" format:u8(=1) kind:u8(0 full|1 delta) signer:[8] len:u32 payload[len] sig:[64]
//! full     := version:u64 issued_at:i64 signing_keys keys:count32 KeyRecord* revoked
//! delta    := base:u64 version:u64 issued_at:i64 signing_keys
//!             upserts:count32 KeyRecord* removed:count32 str8* revoked_added removed_jti:count32 str8*
//! ```
//!
//! The signature covers every byte before it. `signer` is the first 8 bytes of SHA-256 of
//! the signing public key, so a filter pinning several keys (during a rotation) picks the
//! right one without trying each. Decoding verifies the signature *before* parsing the
//! payload, caps sizes before allocating, and rejects trailing bytes: a snapshot is applied
//! whole or not at all.

use crate::codec::{Cursor, Writer};
use crate::error::SnapshotReject;
use crate::policy::{Policy, RouteSet};
use crate::ratelimit::{Burst, Rate, RateSpec};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};
use std::borrow::Cow;
use std::collections::HashMap;

const MAGIC: &[u8; 4] = b"KGSN";
const FORMAT: u8 = 1;
const KIND_FULL: u8 = 0;
const KIND_DELTA: u8 = 1;
/// Smallest encoded [`KeyRecord`]: used to bound counts before allocating.
const MIN_RECORD: usize = 48;
/// Default bound on an encoded snapshot (1M keys fit in ~120 MB).
pub const DEFAULT_MAX_LEN: usize = 512 * 1024 * 1024;

/// API key or registered Ollama client public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `digest` is SHA-256 of the key text.
    ApiKey,
    /// `digest` is the client's Ed25519 public key (Ollama's `OLLAMA_AUTH` signatures).
    OllamaKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    Active,
    Revoked,
}

/// The secret that a rotation replaced, still accepted until `valid_until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Previous {
    pub digest: [u8; 32],
    pub valid_until: i64,
}

/// One key as filters see it. Never holds a secret: only its digest (or a public key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub kind: KeyKind,
    pub digest: [u8; 32],
    pub previous: Option<Previous>,
    pub status: KeyStatus,
    pub expires_at: Option<i64>,
    pub policy: Policy,
}

impl KeyRecord {
    pub fn encode(&self, w: &mut Writer) {
        w.str8(&self.id);
        w.str8(&self.name);
        w.u8(match self.kind {
            KeyKind::ApiKey => 0,
            KeyKind::OllamaKey => 1,
        });
        w.bytes(&self.digest);
        w.u8(match self.status {
            KeyStatus::Active => 0,
            KeyStatus::Revoked => 1,
        });
        w.i64(self.expires_at.unwrap_or(i64::MAX));
        match &self.previous {
            Some(p) => {
                w.u8(1);
                w.bytes(&p.digest);
                w.i64(p.valid_until);
            }
            None => w.u8(0),
        }
        w.u8(self.policy.routes.bits());
        match &self.policy.rate {
            Some(r) => {
                w.u8(1);
                w.u32(r.spec.count());
                w.u32(r.spec.period_ms());
                w.u32(r.burst.get());
            }
            None => w.u8(0),
        }
        w.u8(u8::try_from(self.policy.models.len()).unwrap_or(u8::MAX));
        for m in self.policy.models.iter().take(usize::from(u8::MAX)) {
            w.str8(m.as_str());
        }
    }

    pub fn decode(c: &mut Cursor<'_>) -> Option<Self> {
        let id = c.str8()?.to_owned();
        let name = c.str8()?.to_owned();
        let kind = match c.u8()? {
            0 => KeyKind::ApiKey,
            1 => KeyKind::OllamaKey,
            _ => return None,
        };
        let digest = c.array::<32>()?;
        let status = match c.u8()? {
            0 => KeyStatus::Active,
            1 => KeyStatus::Revoked,
            _ => return None,
        };
        let expires_at = match c.i64()? {
            i64::MAX => None,
            t => Some(t),
        };
        let previous = match c.u8()? {
            0 => None,
            1 => Some(Previous {
                digest: c.array::<32>()?,
                valid_until: c.i64()?,
            }),
            _ => return None,
        };
        let routes = RouteSet::from_bits(c.u8()?);
        let rate = match c.u8()? {
            0 => None,
            1 => {
                let spec = RateSpec::try_new(c.u32()?, c.u32()?).ok()?;
                let burst = Burst::try_new(c.u32()?).ok()?;
                Some(Rate::new(spec, Some(burst)))
            }
            _ => return None,
        };
        let n = usize::from(c.u8()?);
        let mut models = Vec::with_capacity(n.min(c.remaining()));
        for _ in 0..n {
            models.push(crate::model::ModelGlob::try_new(c.str8()?).ok()?);
        }
        Some(Self {
            id,
            name,
            kind,
            digest,
            previous,
            status,
            expires_at,
            policy: Policy {
                routes,
                models,
                rate,
            },
        })
    }

    /// The record alone, as stored per key in the filter's shared data.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(96);
        self.encode(&mut w);
        w.buf
    }

    /// Decodes [`KeyRecord::to_bytes`] output; `None` on malformed or trailing bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let mut c = Cursor::new(bytes);
        let r = Self::decode(&mut c)?;
        c.is_empty().then_some(r)
    }
}

/// A token-signing public key published in snapshots and JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningPub {
    pub kid: String,
    pub key: [u8; 32],
}

/// A revoked token id, kept until the token would have expired anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedToken {
    pub jti: String,
    pub exp: i64,
}

/// The whole state at one version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub version: u64,
    pub issued_at: i64,
    pub signing_keys: Vec<SigningPub>,
    /// Sorted by id (canonical form: equal states encode to equal bytes).
    pub keys: Vec<KeyRecord>,
    pub revoked_tokens: Vec<RevokedToken>,
}

/// The changes from `base` to `version`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Delta {
    pub base: u64,
    pub version: u64,
    pub issued_at: i64,
    /// The full signing-key list (small; replaced whole).
    pub signing_keys: Vec<SigningPub>,
    pub upserts: Vec<KeyRecord>,
    pub removed: Vec<String>,
    pub revoked_added: Vec<RevokedToken>,
    pub revoked_removed: Vec<String>,
}

/// A decoded, signature-checked envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Full(Snapshot),
    Delta(Delta),
}

impl Payload {
    pub fn version(&self) -> u64 {
        match self {
            Self::Full(s) => s.version,
            Self::Delta(d) => d.version,
        }
    }
}

fn write_signing_keys(w: &mut Writer, keys: &[SigningPub]) {
    w.len16(keys.len());
    for k in keys {
        w.str8(&k.kid);
        w.bytes(&k.key);
    }
}

fn read_signing_keys(c: &mut Cursor<'_>) -> Option<Vec<SigningPub>> {
    let n = c.count16(33)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(SigningPub {
            kid: c.str8()?.to_owned(),
            key: c.array::<32>()?,
        });
    }
    Some(v)
}

fn write_revoked(w: &mut Writer, r: &[RevokedToken]) {
    w.len32(r.len());
    for t in r {
        w.str8(&t.jti);
        w.i64(t.exp);
    }
}

fn read_revoked(c: &mut Cursor<'_>) -> Option<Vec<RevokedToken>> {
    let n = c.count32(9)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(RevokedToken {
            jti: c.str8()?.to_owned(),
            exp: c.i64()?,
        });
    }
    Some(v)
}

fn read_records(c: &mut Cursor<'_>) -> Option<Vec<KeyRecord>> {
    let n = c.count32(MIN_RECORD)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(KeyRecord::decode(c)?);
    }
    Some(v)
}

fn read_strings(c: &mut Cursor<'_>) -> Option<Vec<String>> {
    let n = c.count32(1)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(c.str8()?.to_owned());
    }
    Some(v)
}

impl Snapshot {
    fn encode_payload(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(64 + self.keys.len() * 96);
        w.u64(self.version);
        w.i64(self.issued_at);
        write_signing_keys(&mut w, &self.signing_keys);
        w.len32(self.keys.len());
        for k in &self.keys {
            k.encode(&mut w);
        }
        write_revoked(&mut w, &self.revoked_tokens);
        w.buf
    }

    fn decode_payload(c: &mut Cursor<'_>) -> Option<Self> {
        Some(Self {
            version: c.u64()?,
            issued_at: c.i64()?,
            signing_keys: read_signing_keys(c)?,
            keys: read_records(c)?,
            revoked_tokens: read_revoked(c)?,
        })
    }

    /// Puts the snapshot in canonical order (keys by id, revoked tokens by jti).
    pub fn canonicalize(&mut self) {
        self.keys.sort_by(|a, b| a.id.cmp(&b.id));
        self.revoked_tokens.sort_by(|a, b| a.jti.cmp(&b.jti));
    }

    /// The delta that turns `self` into `new` (both canonical).
    pub fn diff(&self, new: &Snapshot) -> Delta {
        let old: HashMap<&str, &KeyRecord> = self.keys.iter().map(|k| (k.id.as_str(), k)).collect();
        let newer: HashMap<&str, &KeyRecord> =
            new.keys.iter().map(|k| (k.id.as_str(), k)).collect();
        let upserts = new
            .keys
            .iter()
            .filter(|k| old.get(k.id.as_str()) != Some(k))
            .cloned()
            .collect();
        let removed = self
            .keys
            .iter()
            .filter(|k| !newer.contains_key(k.id.as_str()))
            .map(|k| k.id.clone())
            .collect();
        let old_rev: HashMap<&str, i64> = self
            .revoked_tokens
            .iter()
            .map(|t| (t.jti.as_str(), t.exp))
            .collect();
        let new_rev: HashMap<&str, i64> = new
            .revoked_tokens
            .iter()
            .map(|t| (t.jti.as_str(), t.exp))
            .collect();
        Delta {
            base: self.version,
            version: new.version,
            issued_at: new.issued_at,
            signing_keys: new.signing_keys.clone(),
            upserts,
            removed,
            revoked_added: new
                .revoked_tokens
                .iter()
                .filter(|t| old_rev.get(t.jti.as_str()) != Some(&t.exp))
                .cloned()
                .collect(),
            revoked_removed: self
                .revoked_tokens
                .iter()
                .filter(|t| !new_rev.contains_key(t.jti.as_str()))
                .map(|t| t.jti.clone())
                .collect(),
        }
    }
}

impl Delta {
    fn encode_payload(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(128 + self.upserts.len() * 96);
        w.u64(self.base);
        w.u64(self.version);
        w.i64(self.issued_at);
        write_signing_keys(&mut w, &self.signing_keys);
        w.len32(self.upserts.len());
        for k in &self.upserts {
            k.encode(&mut w);
        }
        w.len32(self.removed.len());
        for id in &self.removed {
            w.str8(id);
        }
        write_revoked(&mut w, &self.revoked_added);
        w.len32(self.revoked_removed.len());
        for j in &self.revoked_removed {
            w.str8(j);
        }
        w.buf
    }

    fn decode_payload(c: &mut Cursor<'_>) -> Option<Self> {
        Some(Self {
            base: c.u64()?,
            version: c.u64()?,
            issued_at: c.i64()?,
            signing_keys: read_signing_keys(c)?,
            upserts: read_records(c)?,
            removed: read_strings(c)?,
            revoked_added: read_revoked(c)?,
            revoked_removed: read_strings(c)?,
        })
    }
}

/// First 8 bytes of SHA-256 of a snapshot-signing public key.
pub fn fingerprint(key: &VerifyingKey) -> [u8; 8] {
    let d: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    let mut f = [0u8; 8];
    f.copy_from_slice(d.get(..8).unwrap_or(&[0; 8]));
    f
}

/// keyd's snapshot-signing key. `Debug` never prints the private half.
#[derive(Clone)]
pub struct SnapshotSigner {
    key: SigningKey,
}

impl core::fmt::Debug for SnapshotSigner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "SnapshotSigner({}, <redacted>)",
            encode_public_key(&self.verifying_key())
        )
    }
}

impl SnapshotSigner {
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    pub fn sign_full(&self, s: &Snapshot) -> Vec<u8> {
        self.envelope(KIND_FULL, &s.encode_payload())
    }

    pub fn sign_delta(&self, d: &Delta) -> Vec<u8> {
        self.envelope(KIND_DELTA, &d.encode_payload())
    }

    fn envelope(&self, kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut w = Writer::with_capacity(payload.len() + 96);
        w.bytes(MAGIC);
        w.u8(FORMAT);
        w.u8(kind);
        w.bytes(&fingerprint(&self.verifying_key()));
        w.len32(payload.len());
        w.bytes(payload);
        let sig = self.key.sign(&w.buf);
        w.bytes(&sig.to_bytes());
        w.buf
    }
}

/// Text form of a snapshot public key, as pinned in filter configuration: unpadded
/// base64url of the 32 key bytes.
pub fn encode_public_key(key: &VerifyingKey) -> String {
    crate::codec::b64url_encode(key.as_bytes())
}

pub fn parse_public_key(s: &str) -> Option<VerifyingKey> {
    let bytes = crate::codec::b64url_decode(s.trim())?;
    let arr: [u8; 32] = bytes.as_slice().try_into().ok()?;
    VerifyingKey::from_bytes(&arr).ok()
}

/// Verifies and decodes an envelope against the `pinned` keys.
pub fn decode(
    bytes: &[u8],
    pinned: &[VerifyingKey],
    max_len: usize,
) -> Result<Payload, SnapshotReject> {
    if bytes.len() > max_len {
        return Err(SnapshotReject::TooLarge);
    }
    let mut c = Cursor::new(bytes);
    if c.take(4) != Some(MAGIC.as_slice()) {
        return Err(SnapshotReject::BadMagic);
    }
    match c.u8() {
        Some(FORMAT) => {}
        Some(_) => return Err(SnapshotReject::UnsupportedVersion),
        None => return Err(SnapshotReject::Malformed),
    }
    let kind = c.u8().ok_or(SnapshotReject::Malformed)?;
    let signer = c.array::<8>().ok_or(SnapshotReject::Malformed)?;
    let len = usize::try_from(c.u32().ok_or(SnapshotReject::Malformed)?)
        .map_err(|_| SnapshotReject::Malformed)?;
    let payload = c.take(len).ok_or(SnapshotReject::Malformed)?;
    let sig = c.array::<64>().ok_or(SnapshotReject::Malformed)?;
    if !c.is_empty() {
        return Err(SnapshotReject::TrailingBytes);
    }
    let key = pinned
        .iter()
        .find(|k| fingerprint(k) == signer)
        .ok_or(SnapshotReject::UnknownSigner)?;
    let signed = bytes
        .get(..bytes.len() - 64)
        .ok_or(SnapshotReject::Malformed)?;
    key.verify_strict(signed, &Signature::from_bytes(&sig))
        .map_err(|_| SnapshotReject::BadSignature)?;
    let mut p = Cursor::new(payload);
    let out = match kind {
        KIND_FULL => {
            Payload::Full(Snapshot::decode_payload(&mut p).ok_or(SnapshotReject::Malformed)?)
        }
        KIND_DELTA => {
            Payload::Delta(Delta::decode_payload(&mut p).ok_or(SnapshotReject::Malformed)?)
        }
        _ => return Err(SnapshotReject::Malformed),
    };
    if !p.is_empty() {
        return Err(SnapshotReject::TrailingBytes);
    }
    Ok(out)
}

/// Where the decision engine looks keys up. Implemented by [`MemStore`] (keyd, tests) and
/// by the filter over proxy-wasm shared data.
pub trait KeyStore {
    fn key(&self, id: &str) -> Option<Cow<'_, KeyRecord>>;
    fn signing_key(&self, kid: &str) -> Option<VerifyingKey>;
    fn token_revoked(&self, jti: &str) -> bool;
}

/// An in-memory key set: O(1) lookup by id. Applying payloads is all-or-nothing.
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    pub version: u64,
    pub issued_at: i64,
    keys: HashMap<String, KeyRecord>,
    signing: Vec<(String, VerifyingKey)>,
    signing_raw: Vec<SigningPub>,
    revoked: HashMap<String, i64>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Applies a verified payload. A full snapshot must be newer than what is held (or the
    /// store empty); a delta must start at the held version.
    pub fn apply(&mut self, payload: Payload) -> Result<(), SnapshotReject> {
        match payload {
            Payload::Full(s) => {
                if self.version != 0 && s.version <= self.version {
                    return Err(SnapshotReject::NotNewer);
                }
                let signing = decode_signing(&s.signing_keys)?;
                self.keys = s.keys.into_iter().map(|k| (k.id.clone(), k)).collect();
                self.revoked = s
                    .revoked_tokens
                    .into_iter()
                    .map(|t| (t.jti, t.exp))
                    .collect();
                self.signing = signing;
                self.signing_raw = s.signing_keys;
                self.version = s.version;
                self.issued_at = s.issued_at;
            }
            Payload::Delta(d) => {
                if d.base != self.version {
                    return Err(SnapshotReject::BaseMismatch);
                }
                if d.version <= self.version {
                    return Err(SnapshotReject::NotNewer);
                }
                // Validate everything before mutating anything.
                let signing = decode_signing(&d.signing_keys)?;
                for id in d.removed {
                    self.keys.remove(&id);
                }
                for k in d.upserts {
                    self.keys.insert(k.id.clone(), k);
                }
                for j in d.revoked_removed {
                    self.revoked.remove(&j);
                }
                for t in d.revoked_added {
                    self.revoked.insert(t.jti, t.exp);
                }
                self.signing = signing;
                self.signing_raw = d.signing_keys;
                self.version = d.version;
                self.issued_at = d.issued_at;
            }
        }
        Ok(())
    }

    /// Inserts or replaces one record (keyd keeps its verify state current this way).
    pub fn upsert(&mut self, record: KeyRecord) {
        self.keys.insert(record.id.clone(), record);
    }

    pub fn remove(&mut self, id: &str) {
        self.keys.remove(id);
    }

    pub fn set_signing_keys(&mut self, keys: Vec<SigningPub>) -> Result<(), SnapshotReject> {
        self.signing = decode_signing(&keys)?;
        self.signing_raw = keys;
        Ok(())
    }

    pub fn revoke_token(&mut self, jti: String, exp: i64) {
        self.revoked.insert(jti, exp);
    }

    /// The held state as a canonical snapshot.
    pub fn to_snapshot(&self) -> Snapshot {
        let mut s = Snapshot {
            version: self.version,
            issued_at: self.issued_at,
            signing_keys: self.signing_raw.clone(),
            keys: self.keys.values().cloned().collect(),
            revoked_tokens: self
                .revoked
                .iter()
                .map(|(j, e)| RevokedToken {
                    jti: j.clone(),
                    exp: *e,
                })
                .collect(),
        };
        s.canonicalize();
        s
    }

    pub fn records(&self) -> impl Iterator<Item = &KeyRecord> {
        self.keys.values()
    }
}

fn decode_signing(keys: &[SigningPub]) -> Result<Vec<(String, VerifyingKey)>, SnapshotReject> {
    keys.iter()
        .map(|k| {
            VerifyingKey::from_bytes(&k.key)
                .map(|v| (k.kid.clone(), v))
                .map_err(|_| SnapshotReject::Malformed)
        })
        .collect()
}

impl KeyStore for MemStore {
    fn key(&self, id: &str) -> Option<Cow<'_, KeyRecord>> {
        self.keys.get(id).map(Cow::Borrowed)
    }

    fn signing_key(&self, kid: &str) -> Option<VerifyingKey> {
        self.signing.iter().find(|(k, _)| k == kid).map(|(_, v)| *v)
    }

    fn token_revoked(&self, jti: &str) -> bool {
        self.revoked.contains_key(jti)
    }
}
