//! Errors returned by the samplers.

/// Everything that can go wrong while sampling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// The denoiser failed.
    #[error("denoiser failed: {0}")]
    Denoiser(Box<dyn std::error::Error + Send + Sync>),

    /// A sampler option is out of range or unknown.
    #[error("invalid sampler option: {0}")]
    Option(String),

    /// The noise source cannot provide what was asked.
    #[error("noise source: {0}")]
    Noise(String),

    /// The step hook asked to stop; `done` steps had run.
    #[error("stopped after {done} of {total} steps")]
    Stopped {
        /// Steps finished before the stop.
        done: usize,
        /// Steps of the whole run.
        total: usize,
    },
}

/// Result type of the samplers.
pub type Result<T> = std::result::Result<T, Error>;
