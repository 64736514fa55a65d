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

/// The message of `error` and of its causes, joined by `: ` as anyhow's `{:#}` prints them, but
/// without a cause whose text is already there: an error such as [`Error::Io`] both shows its
/// source (`{path}: {source}`) and returns it from `source()`, and `{:#}` printed it twice.
pub fn message(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = e.source();
    }
    text
}

/// How every cxr tool's `main` ends with an error: `tool: error: message` on stderr (the error
/// and its causes, see [`message`]) and exit status 1. Errors meant for users never print a
/// backtrace, whatever `RUST_BACKTRACE` says (anyhow's `Debug` form, which `fn main() ->
/// Result` prints, would); panics still do. On success, the value.
pub fn exit_on_error<T, E>(tool: &str, result: std::result::Result<T, E>) -> T
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match result {
        Ok(value) => value,
        Err(e) => {
            let e: Box<dyn std::error::Error + Send + Sync> = e.into();
            eprintln!("{tool}: error: {}", message(e.as_ref()));
            std::process::exit(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_shows_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = Error::io("m.parquet", io);
        assert_eq!(message(&e), "m.parquet: no such file");

        /// Context that does not repeat its source, as anyhow's `.context()` adds.
        #[derive(Debug)]
        struct Context(&'static str, Error);
        impl std::fmt::Display for Context {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Context {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.1)
            }
        }
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = Context("reading the manifest", Error::io("m.parquet", io));
        assert_eq!(message(&e), "reading the manifest: m.parquet: no such file");
    }
}
