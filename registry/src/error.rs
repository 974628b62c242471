//! Errors of the registry and of fetching its files.

use std::path::PathBuf;

/// Everything that can go wrong while resolving or fetching registry entries.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done (`read`, `write`, `create`, …).
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },

    /// A cache file could not be written whole.
    #[error(transparent)]
    File(#[from] maskdit_io::Error),

    /// The registry file is unreadable or malformed, or an entry is incomplete.
    #[error("{0}")]
    Registry(String),

    /// A name the registry does not know, with the nearest known names.
    #[error(
        "unknown {what} `{}`; did you mean {}? (`maskdit list` shows all)",
        maskdit_io::printable(name),
        maskdit_io::printable(&suggestions.join(", "))
    )]
    Unknown {
        /// What kind of name (`model`, `VAE`, `ImageNet class`, …).
        what: String,
        /// The name asked for.
        name: String,
        /// The closest known names, best first.
        suggestions: Vec<String>,
    },

    /// A class argument that does not fit the model.
    #[error("{0}")]
    Class(String),

    /// `HF_HUB_OFFLINE` is set and the entry is not cached.
    #[error("`{name}` is not in the cache and HF_HUB_OFFLINE is set; run `maskdit download {name}` with network access first")]
    Offline {
        /// Registry name of the entry.
        name: String,
    },

    /// A server answered with an error status.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The address asked.
        url: String,
        /// The HTTP status.
        status: u16,
    },

    /// A server could not be reached, or its answer could not be read.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The address asked.
        url: String,
        /// Why.
        reason: String,
    },

    /// The Hub repository does not hold the file as the registry describes it.
    #[error("{0}")]
    NotFound(String),

    /// A download is incomplete, too long or damaged (what was kept or deleted is said).
    #[error("{0}")]
    Download(String),

    /// An answer or an entry that would reach outside its folder or its server, or a token
    /// that cannot be sent; nothing was written.
    #[error("{0}")]
    Unsafe(String),

    /// Every source of an entry failed; each failure is listed.
    #[error(
        "could not fetch `{name}`{}; every source failed:\n  {}\nCheck the network, HF_ENDPOINT and HF_TOKEN",
        file.as_ref().map(|f| format!(" ({f})")).unwrap_or_default(),
        failures.join("\n  ")
    )]
    AllSourcesFailed {
        /// Registry name of the entry.
        name: String,
        /// The file of the entry that could not be fetched (entries of one folder: none).
        file: Option<String>,
        /// One line per source tried.
        failures: Vec<String>,
    },
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { action, path, source }
    }
}

/// Result type of the registry.
pub type Result<T> = std::result::Result<T, Error>;
