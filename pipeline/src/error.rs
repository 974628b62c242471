//! Errors of the pipeline.

/// Everything that can go wrong between seeds and images.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// The model failed.
    #[error(transparent)]
    Model(#[from] maskdit::Error),

    /// The sampler failed, or its step hook stopped it ([`maskdit_sampler::Error::Stopped`]).
    #[error(transparent)]
    Sampler(#[from] maskdit_sampler::Error),

    /// A registry entry could not be resolved or fetched.
    #[error(transparent)]
    Registry(#[from] maskdit_registry::Error),

    /// The VAE failed.
    #[error(transparent)]
    Vae(#[from] maskdit_vae::Error),

    /// The request does not fit the model (classes, guidance).
    #[error("{0}")]
    Request(String),

    /// The samples or their decoded pixels hold NaN or infinite values.
    #[error(
        "the {stage} of seeds {first}..={last} hold NaN or infinite values: the weights may be damaged, or the \
         guidance scale {guidance} is too large"
    )]
    NonFinite {
        /// `samples` or `decoded pixels`.
        stage: &'static str,
        /// The batch's first seed.
        first: u64,
        /// The batch's last seed.
        last: u64,
        /// The guidance scale in use.
        guidance: f64,
    },
}

/// Result type of the pipeline.
pub type Result<T> = std::result::Result<T, Error>;
