//! Signed tokens: compact JWS with `alg: EdDSA` (Ed25519, RFC 8037) and a `kid`.
//!
//! Standard JWT so any JWT library and Envoy's `jwt_authn` can check them too. Verification
//! accepts exactly one algorithm: the header's `alg` must be `EdDSA`, so `none`, HS256 with
//! the public key as HMAC secret, and RS256 are all rejected before any crypto runs.
//! Signatures are checked with `verify_strict` (rejects small-order keys and non-canonical
//! signatures, so a token has exactly one valid encoding per signer).

use crate::codec::{b64url_decode, b64url_encode};
use crate::error::TokenReject;
use core::fmt;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Upper bound on a token's length; anything longer is rejected before decoding.
pub const MAX_TOKEN_LEN: usize = 4096;

/// The claims keygate puts in a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The parent key's id.
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    pub jti: String,
    /// Route classes copied from the key at mint time (informational: the filter applies
    /// the parent key's current policy, which can only be narrower after a re-issue).
    #[serde(default)]
    pub scope: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crit: Option<serde_json::Value>,
}

/// A token-signing key with its `kid`. `Debug` never prints the private half.
#[derive(Clone)]
pub struct TokenSigner {
    pub kid: String,
    key: SigningKey,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenSigner({}, <redacted>)", self.kid)
    }
}

impl TokenSigner {
    /// `seed` comes from the OS CSPRNG (keyd) or a fixed test seed.
    pub fn from_seed(kid: impl Into<String>, seed: [u8; 32]) -> Self {
        Self {
            kid: kid.into(),
            key: SigningKey::from_bytes(&seed),
        }
    }

    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Signs `claims` into a compact JWS.
    pub fn mint(&self, claims: &Claims) -> String {
        let header = Header {
            alg: "EdDSA".into(),
            typ: Some("JWT".into()),
            kid: Some(self.kid.clone()),
            crit: None,
        };
        // Serializing these plain structs cannot fail; fall back to empty objects anyway
        // rather than panic.
        let h = serde_json::to_vec(&header).unwrap_or_default();
        let c = serde_json::to_vec(claims).unwrap_or_default();
        let mut out = b64url_encode(&h);
        out.push('.');
        out.push_str(&b64url_encode(&c));
        let sig = self.key.sign(out.as_bytes());
        out.push('.');
        out.push_str(&b64url_encode(&sig.to_bytes()));
        out
    }
}

/// Where verification finds public keys by `kid`.
pub trait SigningKeys {
    fn verifying_key(&self, kid: &str) -> Option<VerifyingKey>;
}

impl SigningKeys for [(String, VerifyingKey)] {
    fn verifying_key(&self, kid: &str) -> Option<VerifyingKey> {
        self.iter().find(|(k, _)| k == kid).map(|(_, v)| *v)
    }
}

impl SigningKeys for Vec<(String, VerifyingKey)> {
    fn verifying_key(&self, kid: &str) -> Option<VerifyingKey> {
        self.as_slice().verifying_key(kid)
    }
}

/// Verification settings. `now` is passed in: this crate has no clock.
#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions<'a> {
    pub now: i64,
    /// Longest accepted `exp - iat`, in seconds.
    pub max_lifetime: i64,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    pub leeway: i64,
    /// When set, `iss` must equal it.
    pub issuer: Option<&'a str>,
}

impl<'a> VerifyOptions<'a> {
    pub fn new(now: i64) -> Self {
        Self {
            now,
            max_lifetime: 24 * 3600,
            leeway: 30,
            issuer: None,
        }
    }
}

/// True when `text` has the shape of a compact JWS (two dots), so the decision engine can
/// report token reasons rather than key reasons.
pub fn looks_like_token(text: &str) -> bool {
    text.bytes().filter(|&b| b == b'.').count() == 2
}

/// Verifies a compact JWS and returns its claims. Checks, in order: size, shape, header
/// (alg, crit, kid), signature, claims, times. Each failure has its own [`TokenReject`].
pub fn verify(
    token: &str,
    keys: &(impl SigningKeys + ?Sized),
    opts: &VerifyOptions<'_>,
) -> Result<Claims, TokenReject> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenReject::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(c64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenReject::Malformed);
    };
    // An empty signature segment is left to the header and signature checks, so an
    // `alg: none` token (`header.claims.`) is reported as the forbidden alg it is.
    if h64.is_empty() || c64.is_empty() {
        return Err(TokenReject::Malformed);
    }
    let header_bytes = b64url_decode(h64).ok_or(TokenReject::BadBase64)?;
    if !is_json_object(&header_bytes) {
        return Err(TokenReject::BadHeader);
    }
    let header: Header =
        serde_json::from_slice(&header_bytes).map_err(|_| TokenReject::BadHeader)?;
    if header.alg != "EdDSA" {
        return Err(TokenReject::AlgNotAllowed);
    }
    if header.crit.is_some() {
        return Err(TokenReject::CritNotSupported);
    }
    let kid = header.kid.ok_or(TokenReject::MissingKid)?;
    let key = keys.verifying_key(&kid).ok_or(TokenReject::UnknownKid)?;
    let sig_bytes = b64url_decode(s64).ok_or(TokenReject::BadBase64)?;
    let sig_arr: [u8; 64] = sig_bytes
        .as_slice()
        .try_into()
        .map_err(|_| TokenReject::BadSignature)?;
    let sig = Signature::from_bytes(&sig_arr);
    // The signing input is the first two segments exactly as received.
    let signing_input_len = h64.len() + 1 + c64.len();
    let signing_input = token
        .get(..signing_input_len)
        .ok_or(TokenReject::Malformed)?;
    key.verify_strict(signing_input.as_bytes(), &sig)
        .map_err(|_| TokenReject::BadSignature)?;
    let claims_bytes = b64url_decode(c64).ok_or(TokenReject::BadBase64)?;
    if !is_json_object(&claims_bytes) {
        return Err(TokenReject::BadClaims);
    }
    let claims: Claims =
        serde_json::from_slice(&claims_bytes).map_err(|_| TokenReject::BadClaims)?;
    check_times(&claims, opts)?;
    if let Some(iss) = opts.issuer {
        if claims.iss != iss {
            return Err(TokenReject::WrongIssuer);
        }
    }
    Ok(claims)
}

/// JOSE header and claims must be JSON objects (RFC 7515 §4, RFC 7519 §7.2). serde's
/// derived `Deserialize` would also read a struct from a JSON array (`["EdDSA",null,"k1"]`),
/// which no other JWT implementation accepts, so the shape is checked first.
fn is_json_object(bytes: &[u8]) -> bool {
    bytes.trim_ascii_start().first() == Some(&b'{')
}

/// Time checks, also used when a cached token is reused (expiry still applies).
pub fn check_times(claims: &Claims, opts: &VerifyOptions<'_>) -> Result<(), TokenReject> {
    if claims.exp.saturating_add(opts.leeway) <= opts.now {
        return Err(TokenReject::Expired);
    }
    if let Some(nbf) = claims.nbf {
        if nbf.saturating_sub(opts.leeway) > opts.now {
            return Err(TokenReject::NotYetValid);
        }
    }
    if claims.iat.saturating_sub(opts.leeway) > opts.now {
        return Err(TokenReject::NotYetValid);
    }
    if claims.exp.saturating_sub(claims.iat) > opts.max_lifetime || claims.exp < claims.iat {
        return Err(TokenReject::LifetimeTooLong);
    }
    Ok(())
}

/// A `kid` for a token-signing public key: the first 16 base32 chars of its SHA-256, so
/// kids are stable and derivable from the key alone (JWKS consumers can check it).
pub fn kid_for(key: &VerifyingKey) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(key.as_bytes());
    let mut s = crate::codec::base32_encode(&d);
    s.truncate(16);
    s
}

/// The JWKS entry (RFC 8037 OKP) for a token-signing public key.
pub fn jwk_for(kid: &str, key: &VerifyingKey) -> serde_json::Value {
    serde_json::json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "alg": "EdDSA",
        "use": "sig",
        "kid": kid,
        "x": b64url_encode(key.as_bytes()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: i64) -> Claims {
        Claims {
            iss: "keyd".into(),
            sub: "abcdefghijkl".into(),
            iat: now,
            exp: now + 900,
            nbf: None,
            jti: "j1".into(),
            scope: vec!["inference".into()],
            models: vec![],
        }
    }

    #[test]
    fn mint_verify_roundtrip_and_rejections() {
        let s = TokenSigner::from_seed("k1", [5; 32]);
        let keys = vec![("k1".to_string(), s.verifying_key())];
        let t = s.mint(&claims(1000));
        assert_eq!(
            verify(&t, &keys, &VerifyOptions::new(1001)).unwrap().sub,
            "abcdefghijkl"
        );
        assert_eq!(
            verify(&t, &keys, &VerifyOptions::new(2000)),
            Err(TokenReject::Expired)
        );
        let other = vec![("k2".to_string(), s.verifying_key())];
        assert_eq!(
            verify(&t, &other, &VerifyOptions::new(1001)),
            Err(TokenReject::UnknownKid)
        );
    }
}
