//! Errors returned by the training crate.

use std::path::PathBuf;

/// Everything that can go wrong while setting up or running training.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model failed (building, loading weights, a forward pass).
    #[error(transparent)]
    Model(#[from] maskdit::Error),

    /// The VAE part (latent sampling) failed.
    #[error(transparent)]
    Vae(#[from] maskdit_vae::Error),

    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// Another rank of a data-parallel run failed, vanished or did not answer.
    #[error(transparent)]
    Parallel(#[from] maskdit_parallel::Error),

    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// The run settings are not usable.
    #[error("invalid training settings: {0}")]
    Config(String),

    /// A training checkpoint could not be read or does not fit.
    #[error("training checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Training data could not be read or is malformed.
    #[error("data {path}: {reason}")]
    Data {
        /// The data file or folder.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Training produced a NaN or infinite loss.
    #[error("the loss became {loss} at step {step}; the last checkpoint is intact (lower the learning rate or check the data)")]
    NonFinite {
        /// The step that failed.
        step: u64,
        /// The loss value.
        loss: f64,
    },

    /// An input does not fit (labels out of range, an empty dataset, missing weights).
    #[error("invalid input: {0}")]
    Input(String),

    /// Another process holds the run folder.
    #[error(transparent)]
    Locked(maskdit_io::Error),
}

impl From<maskdit_io::Error> for Error {
    fn from(err: maskdit_io::Error) -> Self {
        match err {
            locked @ maskdit_io::Error::Locked { .. } => Self::Locked(locked),
            err => Self::Model(err.into()),
        }
    }
}

impl From<maskdit_sampler::Error> for Error {
    fn from(err: maskdit_sampler::Error) -> Self {
        Self::Model(err.into())
    }
}

/// Result type of the training crate.
pub type Result<T> = std::result::Result<T, Error>;
