//! Errors returned by the file helpers.

use std::path::PathBuf;

/// What can go wrong while reading or writing a file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused a read or a write.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// The file was read but its contents are not what they should be.
    #[error("{path}: {reason}")]
    Format {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Another process holds the folder.
    #[error("{} is in use by another maskdit process{}; wait for it to end or choose another folder", folder.display(), holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default())]
    Locked {
        /// The folder.
        folder: PathBuf,
        /// The holder's pid, where its lock file records it.
        holder: Option<u32>,
    },
}

impl Error {
    /// The file the error concerns.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::Io { path, .. } | Self::Format { path, .. } => path,
            Self::Locked { folder, .. } => folder,
        }
    }
}

/// Result type of the file helpers.
pub type Result<T> = std::result::Result<T, Error>;
