//! Sample evaluation: the FID Inception-v3 network (pytorch-fid's port of TensorFlow's
//! 2015-12-05 Inception), feature statistics (mean and covariance) and the Fréchet distance
//! between two Gaussians, as FID computes them (pytorch-fid's `calculate_frechet_distance`).
//!
//! ```
//! use maskdit_eval::Statistics;
//!
//! # fn main() -> maskdit_eval::Result<()> {
//! let a = Statistics::from_features(&[0.0, 1.0, 2.0, 0.5, 1.5, 2.5, 1.0, 1.0, 1.0], 3)?;
//! assert!(a.frechet_distance(&a)?.abs() < 1e-6); // a set against itself
//! # Ok(())
//! # }
//! ```

mod features;
mod frechet;
mod image_set;
mod inception;
mod input;
mod manifold;
pub mod npz;

pub use features::SetFeatures;
pub use frechet::Statistics;
pub use image_set::{image_tensor, read_image, ImageSet};
pub use inception::{FidInception, InceptionOutput, FEATURE_DIMS, INPUT_SIDE, LOGITS, SPATIAL_DIMS};
pub use input::InputMode;
pub use manifold::{precision_recall, PrecisionRecall, NEIGHBOURHOOD};

/// What can go wrong while evaluating.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Inputs of the wrong size or too few samples.
    #[error("invalid input: {0}")]
    Input(String),
    /// An image set or statistics file that cannot be used.
    #[error("{path}: {reason}")]
    Data {
        /// The file or folder concerned.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Weights that are not those of the network.
    #[error("unusable Inception weights: {0}")]
    Weights(String),
    /// A weights file that cannot be read.
    #[error(transparent)]
    File(#[from] maskdit_io::Error),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result type of the evaluation crate.
pub type Result<T> = std::result::Result<T, Error>;
