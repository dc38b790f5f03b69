//! Ollama's own request signatures (`OLLAMA_AUTH=1`), so the stock `ollama` CLI can reach
//! a protected server with no shared secret: the server side holds only public keys.
//!
//! The client signs `METHOD + "," + PATH + "?ts=" + unix_seconds` with its Ed25519 key and
//! sends `Authorization: <ssh-wire-pubkey-base64>:<signature-base64>` (no scheme) to
//! `PATH?ts=…`. When `OLLAMA_HOST` carries a path prefix the request goes to
//! `/prefix/PATH?ts=…` but the signed string still starts at `PATH`.
//!
//! Nothing binds the body, and there is no nonce: a captured request can be replayed
//! within the time window. TLS is what keeps requests from being captured.

use crate::codec::Cursor;
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest as _, Sha256};
use thiserror::Error;

/// Default accepted clock difference between client and gateway, in seconds.
pub const DEFAULT_WINDOW_SECS: i64 = 300;
/// The base64 of an ssh-ed25519 wire blob always starts with this.
pub const PUBKEY_B64_PREFIX: &str = "AAAAC3NzaC1lZDI1NTE5AAAAI";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SigReject {
    #[error("signed request header is not <public-key>:<signature>")]
    Malformed,
    #[error("signed request header has a Bearer prefix; Ollama sends it without one")]
    BearerPrefixed,
    #[error("public key is not a base64 ssh-ed25519 key")]
    BadPublicKey,
    #[error("signature is not 64 bytes of base64")]
    BadSignatureEncoding,
    #[error("signature does not verify")]
    BadSignature,
    #[error("request has no ts query parameter")]
    MissingTs,
    #[error("request has query parameters other than ts")]
    ExtraQuery,
    #[error("ts is not a unix time in seconds")]
    BadTs,
    #[error("ts is outside the accepted time window")]
    Stale,
    #[error("request path is not under the configured mount prefix")]
    PrefixMismatch,
}

impl SigReject {
    pub fn code(self) -> &'static str {
        match self {
            Self::Malformed => "sig_malformed",
            Self::BearerPrefixed => "sig_bearer_prefixed",
            Self::BadPublicKey => "sig_bad_public_key",
            Self::BadSignatureEncoding => "sig_bad_signature_encoding",
            Self::BadSignature => "sig_bad_signature",
            Self::MissingTs => "sig_missing_ts",
            Self::ExtraQuery => "sig_extra_query",
            Self::BadTs => "sig_bad_ts",
            Self::Stale => "sig_stale",
            Self::PrefixMismatch => "sig_prefix_mismatch",
        }
    }
}

/// True when an `Authorization` value has the shape of an Ollama signature.
pub fn looks_like_signed(value: &str) -> bool {
    value.starts_with(PUBKEY_B64_PREFIX) && value.contains(':')
}

/// Decodes the ssh-ed25519 wire blob (`string "ssh-ed25519" string key32`) from base64.
pub fn parse_public_key_b64(b64: &str) -> Result<[u8; 32], SigReject> {
    let blob = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| SigReject::BadPublicKey)?;
    let mut c = Cursor::new(&blob);
    let alg_len = c.u32().ok_or(SigReject::BadPublicKey)?;
    if alg_len != 11 || c.take(11) != Some(b"ssh-ed25519".as_slice()) {
        return Err(SigReject::BadPublicKey);
    }
    if c.u32() != Some(32) {
        return Err(SigReject::BadPublicKey);
    }
    let key = c.array::<32>().ok_or(SigReject::BadPublicKey)?;
    if !c.is_empty() {
        return Err(SigReject::BadPublicKey);
    }
    Ok(key)
}

/// Parses an authorized_keys line (`ssh-ed25519 AAAA… comment`) or the bare base64 field.
pub fn parse_authorized_key(line: &str) -> Result<[u8; 32], SigReject> {
    let mut parts = line.split_whitespace();
    let first = parts.next().ok_or(SigReject::BadPublicKey)?;
    if first == "ssh-ed25519" {
        parse_public_key_b64(parts.next().ok_or(SigReject::BadPublicKey)?)
    } else {
        parse_public_key_b64(first)
    }
}

/// The key id a registered public key gets: first 12 base32 chars of SHA-256 of the key,
/// so a signed request is looked up in O(1) like an API key.
pub fn key_id_for(public_key: &[u8; 32]) -> String {
    let d = Sha256::digest(public_key);
    let mut s = crate::codec::base32_encode(&d);
    s.truncate(crate::apikey::ID_LEN);
    s
}

/// A signed request whose signature verified; `public_key` still has to be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedSig {
    pub public_key: [u8; 32],
    pub ts: i64,
}

/// Settings for signed requests.
#[derive(Debug, Clone)]
pub struct SigOptions {
    pub window_secs: i64,
    /// Path prefix the gateway is mounted under (`""` or e.g. `/ollama`), removed before
    /// the signed string is rebuilt.
    pub mount_prefix: String,
}

impl Default for SigOptions {
    fn default() -> Self {
        Self {
            window_secs: DEFAULT_WINDOW_SECS,
            mount_prefix: String::new(),
        }
    }
}

/// Rebuilds the signed string from the request and verifies `header` against it.
pub fn verify(
    header: &str,
    method: &str,
    request_path: &str,
    now: i64,
    opts: &SigOptions,
) -> Result<VerifiedSig, SigReject> {
    let header = header.trim();
    if header.len() > 512 {
        return Err(SigReject::Malformed);
    }
    if let Some(rest) = header.strip_prefix("Bearer ") {
        if looks_like_signed(rest.trim()) {
            return Err(SigReject::BearerPrefixed);
        }
    }
    let (pub_b64, sig_b64) = header.split_once(':').ok_or(SigReject::Malformed)?;
    let public_key = parse_public_key_b64(pub_b64)?;
    let sig_bytes = base64::engine::general_purpose::STANDARD
        .decode(sig_b64)
        .map_err(|_| SigReject::BadSignatureEncoding)?;
    let sig: [u8; 64] = sig_bytes
        .as_slice()
        .try_into()
        .map_err(|_| SigReject::BadSignatureEncoding)?;

    let (path, query) = request_path.split_once('?').ok_or(SigReject::MissingTs)?;
    let ts_text = query.strip_prefix("ts=").ok_or(if query.contains("ts=") {
        SigReject::ExtraQuery
    } else {
        SigReject::MissingTs
    })?;
    if ts_text.contains('&') || ts_text.contains('=') {
        return Err(SigReject::ExtraQuery);
    }
    if ts_text.is_empty() || ts_text.len() > 12 || !ts_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SigReject::BadTs);
    }
    let ts: i64 = ts_text.parse().map_err(|_| SigReject::BadTs)?;
    // `abs_diff` cannot overflow whatever clock value the caller passes.
    if now.abs_diff(ts) > opts.window_secs.max(0).unsigned_abs() {
        return Err(SigReject::Stale);
    }
    let prefix = opts.mount_prefix.trim_end_matches('/');
    let signed_path = path.strip_prefix(prefix).ok_or(SigReject::PrefixMismatch)?;
    let signed_path = if signed_path.is_empty() {
        "/"
    } else {
        signed_path
    };
    if !signed_path.starts_with('/') {
        return Err(SigReject::PrefixMismatch);
    }
    let message = format!("{method},{signed_path}?ts={ts_text}");
    let key = VerifyingKey::from_bytes(&public_key).map_err(|_| SigReject::BadPublicKey)?;
    key.verify_strict(message.as_bytes(), &Signature::from_bytes(&sig))
        .map_err(|_| SigReject::BadSignature)?;
    Ok(VerifiedSig { public_key, ts })
}

/// The request path with the `ts` parameter removed, as forwarded upstream.
pub fn strip_ts(path: &str) -> &str {
    match path.split_once('?') {
        Some((p, q)) if q.starts_with("ts=") && !q.contains('&') => p,
        _ => path,
    }
}
