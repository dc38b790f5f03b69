//! keyctl's one error type. Each variant is a failure class with its own exit code, so
//! scripts can tell "keyd is down" from "wrong token" from "no such key" without parsing
//! messages. Messages are one line and say what to do next; none carries a secret.

use std::io;

/// Exit codes, documented in docs/keyctl.md. Scripts depend on them: never renumber.
pub mod exit {
    pub const OK: u8 = 0;
    pub const OTHER: u8 = 1;
    pub const INVALID_ARGUMENT: u8 = 2;
    pub const UNREACHABLE: u8 = 3;
    pub const UNAUTHENTICATED: u8 = 4;
    pub const NOT_FOUND: u8 = 5;
    pub const CONFLICT: u8 = 6;
    pub const CHAIN_BROKEN: u8 = 7;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value the user gave is not valid; nothing was sent to keyd.
    #[error("{0}")]
    InvalidArgument(String),
    /// keyd answered 400: it names what it rejected.
    #[error("keyd rejected the request: {0}")]
    Rejected(String),
    #[error("cannot reach keyd at {url} ({reason}): start keyd, or point --url / KEYD_URL at it")]
    Unreachable { url: String, reason: String },
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(
        "audit log hash chain is broken at entry {seq} ({reason}): {explanation}; \
         the log was changed outside keyd, restore it from a backup and investigate"
    )]
    ChainBroken {
        seq: u64,
        reason: String,
        explanation: &'static str,
    },
    /// keyd failed or answered something keyctl does not understand.
    #[error("{0}")]
    Keyd(String),
    /// A local file could not be read or written.
    #[error("{context}: {source}")]
    File {
        context: String,
        #[source]
        source: io::Error,
    },
    /// Writing to stdout failed; a closed pipe (`keyctl list | head`) is not an error.
    #[error("cannot write output: {0}")]
    Output(#[source] io::Error),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::InvalidArgument(_) | Self::Rejected(_) => exit::INVALID_ARGUMENT,
            Self::Unreachable { .. } => exit::UNREACHABLE,
            Self::Unauthenticated(_) => exit::UNAUTHENTICATED,
            Self::NotFound(_) => exit::NOT_FOUND,
            Self::Conflict(_) => exit::CONFLICT,
            Self::ChainBroken { .. } => exit::CHAIN_BROKEN,
            Self::Output(e) if e.kind() == io::ErrorKind::BrokenPipe => exit::OK,
            Self::Keyd(_) | Self::File { .. } | Self::Output(_) | Self::Other(_) => exit::OTHER,
        }
    }

    /// True when nothing should be printed: the reader went away on purpose.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Self::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }

    /// `--flag: reason`, the shape of every client-side validation error.
    pub fn invalid(flag: &str, reason: impl std::fmt::Display) -> Self {
        Self::InvalidArgument(format!("{flag}: {reason}"))
    }

    pub fn file(context: impl Into<String>, source: io::Error) -> Self {
        Self::File {
            context: context.into(),
            source,
        }
    }
}

impl From<io::Error> for Error {
    /// Bare I/O errors in keyctl come from writing output; file I/O uses [`Error::file`].
    fn from(e: io::Error) -> Self {
        Self::Output(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_per_class() {
        let cases = [
            (Error::InvalidArgument("x".into()), 2),
            (Error::Rejected("x".into()), 2),
            (
                Error::Unreachable {
                    url: "u".into(),
                    reason: "r".into(),
                },
                3,
            ),
            (Error::Unauthenticated("x".into()), 4),
            (Error::NotFound("x".into()), 5),
            (Error::Conflict("x".into()), 6),
            (
                Error::ChainBroken {
                    seq: 1,
                    reason: "hash_mismatch".into(),
                    explanation: "e",
                },
                7,
            ),
            (Error::Keyd("x".into()), 1),
            (Error::Output(io::Error::other("x")), 1),
        ];
        for (e, code) in cases {
            assert_eq!(e.exit_code(), code, "{e:?}");
        }
    }

    #[test]
    fn broken_pipe_is_success() {
        let e = Error::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(e.is_broken_pipe());
        assert_eq!(e.exit_code(), exit::OK);
    }
}
