//! The one error type of the helper.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: run `kgbench keys` for this directory first")]
    Info(String),
    #[error("network: {0}")]
    Net(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Wraps an I/O error with the file it concerns.
pub fn file(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::File {
        path: path.to_path_buf(),
        source,
    }
}
