//! One error type for the shared formats; tools wrap it with their own context.

use std::path::PathBuf;

/// What went wrong reading or writing a shared format. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid cxr manifest: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("{path}: not a valid cxr shard: {reason}")]
    Shard { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Polars {
        path: PathBuf,
        source: polars::error::PolarsError,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("invalid label policy `{spec}`: {reason}")]
    Policy { spec: String, reason: String },
    #[error("unknown observation `{0}` (expected one of the manifest's label columns, e.g. `Pleural Effusion`)")]
    UnknownObservation(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
