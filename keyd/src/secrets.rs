//! Secrets keyd makes: API keys, the admin token, filter credentials, token ids, signing
//! seeds. All randomness comes from the OS CSPRNG; only SHA-256 digests are stored.

use crate::error::{Error, Result};
use keygate_core::apikey::{ApiKey, KeyId};
use keygate_core::codec::{b64url_encode, hex_decode, hex_encode};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// `N` bytes from the operating system's CSPRNG.
pub fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).map_err(|_| Error::Random)?;
    Ok(b)
}

pub fn new_api_key() -> Result<ApiKey> {
    let id = KeyId::from_random(random::<8>()?);
    Ok(ApiKey::generate(&id, random::<32>()?))
}

pub const ADMIN_TOKEN_PREFIX: &str = "kga_";
pub const FILTER_CREDENTIAL_PREFIX: &str = "kgf_";

/// `kga_` + 43 base64url characters (256 bits).
pub fn new_admin_token() -> Result<String> {
    Ok(format!(
        "{ADMIN_TOKEN_PREFIX}{}",
        b64url_encode(&random::<32>()?)
    ))
}

/// A new filter credential: `(id, text)`; the text is `kgf_<id>_<43 base64url chars>`.
pub fn new_filter_credential() -> Result<(String, String)> {
    let id = KeyId::from_random(random::<8>()?).to_string();
    let text = format!(
        "{FILTER_CREDENTIAL_PREFIX}{id}_{}",
        b64url_encode(&random::<32>()?)
    );
    Ok((id, text))
}

/// The id inside a filter credential's text, when it has the right shape.
pub fn filter_credential_id(text: &str) -> Option<&str> {
    let rest = text.strip_prefix(FILTER_CREDENTIAL_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (KeyId::parse(id).is_ok() && secret.len() == 43).then_some(id)
}

/// A token id: 128 random bits, base64url.
pub fn new_jti() -> Result<String> {
    Ok(b64url_encode(&random::<16>()?))
}

pub fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

pub fn sha256_hex(text: &str) -> String {
    hex_encode(&sha256(text))
}

/// Constant-time comparison of a digest with a stored hex digest.
pub fn digest_matches(digest: &[u8; 32], stored_hex: &str) -> bool {
    hex_decode::<32>(stored_hex).is_some_and(|s| bool::from(s.ct_eq(digest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let t = new_admin_token().unwrap();
        assert!(t.starts_with("kga_"));
        assert_eq!(t.len(), 4 + 43);
        let (id, text) = new_filter_credential().unwrap();
        assert_eq!(filter_credential_id(&text), Some(id.as_str()));
        assert_eq!(filter_credential_id("kgf_x_y"), None);
        let d = sha256("abc");
        assert!(digest_matches(&d, &sha256_hex("abc")));
        assert!(!digest_matches(&d, &sha256_hex("abd")));
        assert!(!digest_matches(&d, "zz"));
    }
}
