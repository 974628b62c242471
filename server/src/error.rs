//! Errors of the server.

use std::path::PathBuf;

/// What can stop the server from starting or from keeping a result.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address could not be bound.
    #[error("cannot listen on {address}: {source}; is another server using the port? Choose another with --port")]
    Bind {
        /// `host:port`.
        address: String,
        /// The cause.
        source: std::io::Error,
    },

    /// The gallery folder could not be read or written.
    #[error("gallery {}: {reason}", path.display())]
    Gallery {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// Sampling failed.
    #[error(transparent)]
    Pipeline(#[from] maskdit_pipeline::Error),

    /// A file could not be written whole.
    #[error(transparent)]
    File(#[from] maskdit_io::Error),

    /// The server's own machinery failed (its runtime, its worker).
    #[error("{0}")]
    Server(String),
}

/// Result type of the server.
pub type Result<T> = std::result::Result<T, Error>;
