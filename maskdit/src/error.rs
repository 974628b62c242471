//! Errors returned by the `maskdit` crate.

use std::path::PathBuf;

/// Everything that can go wrong while building, loading, running or training a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// The model configuration is not usable.
    #[error("invalid model configuration: {0}")]
    Config(String),

    /// A weights file (safetensors or an official PyTorch checkpoint) could not be read or does
    /// not fit the model.
    #[error("weights file {path}: {reason}")]
    WeightsFile {
        /// The weights file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A weights file lacks a parameter the model needs.
    #[error("weights file {path}: missing key `{key}` (expected shape {expected:?})")]
    MissingKey {
        /// The weights file.
        path: PathBuf,
        /// The parameter name, in official naming.
        key: String,
        /// The shape the model expects.
        expected: Vec<usize>,
    },

    /// A weights file holds a parameter the model does not have.
    #[error("weights file {path}: unexpected key `{key}` (shape {found:?}); is this the right architecture?")]
    UnexpectedKey {
        /// The weights file.
        path: PathBuf,
        /// The parameter name found in the file.
        key: String,
        /// Its shape.
        found: Vec<usize>,
    },

    /// A weights file's parameter has another shape than the model's.
    #[error("weights file {path}: key `{key}` has shape {found:?}, the model expects {expected:?}")]
    ShapeMismatch {
        /// The weights file.
        path: PathBuf,
        /// The parameter name.
        key: String,
        /// The shape the model expects.
        expected: Vec<usize>,
        /// The shape found in the file.
        found: Vec<usize>,
    },

    /// Sampling failed.
    #[error(transparent)]
    Sampler(#[from] maskdit_sampler::Error),

    /// An input tensor does not fit the model (wrong shape, wrong label width, bad mask).
    #[error("invalid input: {0}")]
    Input(String),
}

impl From<maskdit_io::Error> for Error {
    fn from(err: maskdit_io::Error) -> Self {
        match err {
            maskdit_io::Error::Io { path, source } => Self::Io { path, source },
            maskdit_io::Error::Format { path, reason } => Self::WeightsFile { path, reason },
            locked @ maskdit_io::Error::Locked { .. } => {
                Self::WeightsFile { path: locked.path().to_path_buf(), reason: locked.to_string() }
            }
        }
    }
}

/// Result type of the `maskdit` crate.
pub type Result<T> = std::result::Result<T, Error>;
