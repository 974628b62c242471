//! Sample evaluation: feature statistics (mean and covariance) and the Fréchet distance between
//! two Gaussians, as FID computes them (pytorch-fid's `calculate_frechet_distance`).
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

mod frechet;

pub use frechet::Statistics;

/// What can go wrong while evaluating.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Inputs of the wrong size or too few samples.
    #[error("invalid input: {0}")]
    Input(String),
}

/// Result type of the evaluation crate.
pub type Result<T> = std::result::Result<T, Error>;
