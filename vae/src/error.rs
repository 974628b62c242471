//! Errors returned by the VAE crate.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running the autoencoder.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// The weights file cannot be used.
    #[error("VAE weights {path}: {reason}")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The configuration cannot be used.
    #[error("invalid VAE configuration: {0}")]
    Config(String),

    /// An input does not fit (wrong shape, wrong value range).
    #[error("invalid input: {0}")]
    Input(String),

    /// Decoding or encoding an image file failed.
    #[error(transparent)]
    Image(#[from] image::ImageError),
}

/// Result type of the VAE crate.
pub type Result<T> = std::result::Result<T, Error>;
