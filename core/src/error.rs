//! Rejection reasons. Each is `Copy`, carries no attacker bytes, and has a stable `code()`
//! that appears in filter stats, keyd metrics and test vectors.

use thiserror::Error;

/// Why an API key's text was rejected before any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KeyReject {
    #[error("key does not start with the kg_ prefix")]
    WrongPrefix,
    #[error("key has the wrong length")]
    BadLength,
    #[error("key contains characters outside its alphabet")]
    BadAlphabet,
    #[error("key checksum does not match")]
    BadChecksum,
}

impl KeyReject {
    pub fn code(self) -> &'static str {
        match self {
            Self::WrongPrefix => "key_wrong_prefix",
            Self::BadLength => "key_bad_length",
            Self::BadAlphabet => "key_bad_alphabet",
            Self::BadChecksum => "key_bad_checksum",
        }
    }
}

/// Why a signed token was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TokenReject {
    #[error("token is longer than the size bound")]
    TooLong,
    #[error("token is not three base64url segments")]
    Malformed,
    #[error("token segment is not valid base64url")]
    BadBase64,
    #[error("token header is not valid JSON")]
    BadHeader,
    #[error("token alg is not EdDSA")]
    AlgNotAllowed,
    #[error("token header has a crit parameter")]
    CritNotSupported,
    #[error("token header has no kid")]
    MissingKid,
    #[error("token kid names no known signing key")]
    UnknownKid,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token claims are not valid JSON or miss a required claim")]
    BadClaims,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token lifetime exceeds the configured maximum")]
    LifetimeTooLong,
    #[error("token issuer is not accepted")]
    WrongIssuer,
}

impl TokenReject {
    pub fn code(self) -> &'static str {
        match self {
            Self::TooLong => "token_too_long",
            Self::Malformed => "token_malformed",
            Self::BadBase64 => "token_bad_base64",
            Self::BadHeader => "token_bad_header",
            Self::AlgNotAllowed => "token_alg_not_allowed",
            Self::CritNotSupported => "token_crit_not_supported",
            Self::MissingKid => "token_missing_kid",
            Self::UnknownKid => "token_unknown_kid",
            Self::BadSignature => "token_bad_signature",
            Self::BadClaims => "token_bad_claims",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::LifetimeTooLong => "token_lifetime_too_long",
            Self::WrongIssuer => "token_wrong_issuer",
        }
    }
}

/// Why a snapshot or delta was discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SnapshotReject {
    #[error("snapshot is larger than the size bound")]
    TooLarge,
    #[error("snapshot does not start with the keygate magic")]
    BadMagic,
    #[error("snapshot format version is not supported")]
    UnsupportedVersion,
    #[error("snapshot is truncated or malformed")]
    Malformed,
    #[error("snapshot has trailing bytes")]
    TrailingBytes,
    #[error("snapshot was signed by a key that is not pinned")]
    UnknownSigner,
    #[error("snapshot signature does not verify")]
    BadSignature,
    #[error("delta does not apply to the held version")]
    BaseMismatch,
    #[error("snapshot version is not newer than the held one")]
    NotNewer,
}

impl SnapshotReject {
    pub fn code(self) -> &'static str {
        match self {
            Self::TooLarge => "snapshot_too_large",
            Self::BadMagic => "snapshot_bad_magic",
            Self::UnsupportedVersion => "snapshot_unsupported_version",
            Self::Malformed => "snapshot_malformed",
            Self::TrailingBytes => "snapshot_trailing_bytes",
            Self::UnknownSigner => "snapshot_unknown_signer",
            Self::BadSignature => "snapshot_bad_signature",
            Self::BaseMismatch => "snapshot_base_mismatch",
            Self::NotNewer => "snapshot_not_newer",
        }
    }
}

/// The crate's error type: every fallible operation of keygate-core returns this.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid API key: {0}")]
    Key(#[from] KeyReject),
    #[error("invalid token: {0}")]
    Token(#[from] TokenReject),
    #[error("invalid snapshot: {0}")]
    Snapshot(#[from] SnapshotReject),
    #[error("invalid signed request: {0}")]
    Signed(#[from] crate::ollama_sig::SigReject),
    /// A value failed a validating constructor; the `&'static str` names the field and why.
    #[error("invalid {field}: {reason}")]
    Invalid {
        field: &'static str,
        reason: &'static str,
    },
}

impl Error {
    pub fn invalid(field: &'static str, reason: &'static str) -> Self {
        Self::Invalid { field, reason }
    }
}

pub type Result<T, E = Error> = core::result::Result<T, E>;
