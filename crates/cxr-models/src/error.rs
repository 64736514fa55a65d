//! One error type for the crate.
//!
//! Every variant says what went wrong *and* what to do about it, because the people reading these
//! messages are running a training job, not reading this code. Weight mismatches are collected in
//! full ([`WeightMismatch`]) rather than stopping at the first one: a checkpoint for the wrong
//! architecture differs in hundreds of tensors, and seeing all of them is what tells you so.

use std::fmt;
use std::path::PathBuf;

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, ModelError>;

/// Everything that can go wrong while building, running, loading or saving a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The architecture name is not one this crate knows.
    #[error("unknown architecture {name:?}: use one of {known}")]
    UnknownArchitecture {
        /// The name that was given.
        name: String,
        /// The accepted names, comma separated.
        known: String,
    },

    /// The model configuration is inconsistent (no heads, a duplicate head name, ...).
    #[error("invalid model configuration: {0}")]
    InvalidConfig(String),

    /// The input tensor does not have the shape the model expects.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// `remove_head` named a head that is not there, or the primary head.
    #[error("cannot remove head {name:?}: {reason}")]
    Head {
        /// The head that was named.
        name: String,
        /// Why it cannot be removed.
        reason: String,
    },

    /// The weight file cannot be read as safetensors or as a zip-format PyTorch file.
    #[error("cannot read weights from {path}: {reason}")]
    ReadWeights {
        /// The file.
        path: PathBuf,
        /// What is wrong with it and what to do.
        reason: String,
    },

    /// The checkpoint's tensors do not fit the model: all differences are listed.
    #[error("{0}")]
    IncompatibleWeights(Box<WeightMismatch>),

    /// A checkpoint lacks the metadata this crate writes, or it is malformed.
    #[error("checkpoint {path} has no usable cxr metadata: {reason}")]
    Metadata {
        /// The file.
        path: PathBuf,
        /// What is missing or malformed.
        reason: String,
    },

    /// Writing a checkpoint failed; the previous file at that path, if any, is untouched.
    #[error("cannot write checkpoint {path}: {source} (the previous file, if any, is unchanged)")]
    Write {
        /// The destination.
        path: PathBuf,
        /// The underlying failure.
        source: std::io::Error,
    },

    /// A weight file holds NaN or infinite values: every tensor that does is listed.
    #[error("{}", describe_non_finite(path, tensors))]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// Its tensors holding non-finite values, in file order.
        tensors: Vec<NonFiniteTensor>,
    },

    /// A tensor operation failed inside candle.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// A tensor holding NaN or infinite values (see [`crate::check_finite`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NonFiniteTensor {
    /// Its name in the file.
    pub name: String,
    /// How many of its values are NaN.
    pub nan: usize,
    /// How many are +-infinity.
    pub infinite: usize,
    /// How many values it has.
    pub total: usize,
}

/// Tensors listed by name in a [`ModelError::NonFinite`] message; the rest are counted.
const NON_FINITE_LISTED: usize = 10;

fn describe_non_finite(path: &std::path::Path, tensors: &[NonFiniteTensor]) -> String {
    let mut text = format!(
        "{} holds non-finite values (NaN or infinity) in {} tensor{}, so it cannot be used:",
        path.display(),
        tensors.len(),
        if tensors.len() == 1 { "" } else { "s" }
    );
    for t in tensors.iter().take(NON_FINITE_LISTED) {
        let kinds: Vec<String> = [(t.nan, "NaN"), (t.infinite, "infinite")]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, kind)| format!("{n} {kind}"))
            .collect();
        text.push_str(&format!(
            "\n  {}: {} of {} values non-finite ({})",
            t.name,
            t.nan + t.infinite,
            t.total,
            kinds.join(", ")
        ));
    }
    if tensors.len() > NON_FINITE_LISTED {
        text.push_str(&format!(
            "\n  and {} more tensors",
            tensors.len() - NON_FINITE_LISTED
        ));
    }
    text.push_str(
        "\nhint: the run that wrote it diverged, or the file is damaged; use an earlier \
         checkpoint, or copy it again from its source",
    );
    text
}

/// One tensor whose shape or dtype differs between the model and a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorMismatch {
    /// torchvision name of the tensor.
    pub name: String,
    /// What the model holds, e.g. `[14, 1024] f32`.
    pub model: String,
    /// What the checkpoint holds.
    pub checkpoint: String,
}

/// Every difference between a model and a checkpoint, collected before anything is loaded (a
/// failed load leaves the model unchanged).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WeightMismatch {
    /// A description of the model (architecture, input channels, heads).
    pub model: String,
    /// Tensors the model needs that the checkpoint lacks.
    pub missing: Vec<String>,
    /// Tensors in the checkpoint that the model does not have.
    pub unexpected: Vec<String>,
    /// Tensors present in both with different shapes or kinds.
    pub mismatched: Vec<TensorMismatch>,
}

impl WeightMismatch {
    /// Whether nothing differs.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }
}

impl fmt::Display for WeightMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "checkpoint does not match the model {}:", self.model)?;
        if !self.missing.is_empty() {
            writeln!(f, "  {} missing from the checkpoint:", self.missing.len())?;
            for name in &self.missing {
                writeln!(f, "    {name}")?;
            }
        }
        if !self.unexpected.is_empty() {
            writeln!(
                f,
                "  {} unexpected in the checkpoint:",
                self.unexpected.len()
            )?;
            for name in &self.unexpected {
                writeln!(f, "    {name}")?;
            }
        }
        if !self.mismatched.is_empty() {
            writeln!(
                f,
                "  {} with a different shape or dtype:",
                self.mismatched.len()
            )?;
            for m in &self.mismatched {
                writeln!(
                    f,
                    "    {}: model {}, checkpoint {}",
                    m.name, m.model, m.checkpoint
                )?;
            }
        }
        write!(
            f,
            "hint: check that the architecture and input channels match the checkpoint; if only the \
             heads differ (other classes, added or dropped heads), load with \
             LoadOptions::non_strict(), which re-initialises those heads"
        )
    }
}
