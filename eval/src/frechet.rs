//! Feature statistics and the Fréchet distance between the Gaussians they describe.

use faer::{Mat, Side};
use nalgebra::{DMatrix, DVector};

use crate::{Error, Result};

/// How far (relative to its largest entry or eigenvalue) a covariance read from a file may be
/// from symmetric and positive semi-definite: round-off, not damage.
pub const COVARIANCE_TOLERANCE: f64 = 1e-6;

/// The mean and covariance of a set of feature vectors (f64).
#[derive(Debug, Clone, PartialEq)]
pub struct Statistics {
    /// Mean, `(dims,)`.
    pub mu: DVector<f64>,
    /// Covariance `(dims, dims)`, divided by n − 1 (`np.cov(rowvar=False)`).
    pub sigma: DMatrix<f64>,
}

impl Statistics {
    /// Statistics of `features`, row-major `(samples, dims)`; needs at least two samples.
    pub fn from_features(features: &[f32], dims: usize) -> Result<Self> {
        if dims == 0 || !features.len().is_multiple_of(dims) || features.len() / dims < 2 {
            return Err(Error::Input(format!("{} values are not at least two rows of {dims}", features.len())));
        }
        let n = features.len() / dims;
        let x = DMatrix::from_row_iterator(n, dims, features.iter().map(|&v| v as f64));
        let mu = x.row_mean().transpose();
        let centred = DMatrix::from_fn(n, dims, |r, c| x[(r, c)] - mu[c]);
        let sigma = centred.transpose() * &centred / (n as f64 - 1.0);
        Ok(Self { mu, sigma })
    }

    /// Statistics given directly (e.g. from a reference statistics file): the values must be
    /// finite and the covariance symmetric and positive semi-definite (both within a relative
    /// [`COVARIANCE_TOLERANCE`]), or the distance could come out negative.
    pub fn new(mu: DVector<f64>, sigma: DMatrix<f64>) -> Result<Self> {
        if sigma.nrows() != mu.len() || sigma.ncols() != mu.len() {
            return Err(Error::Input(format!("mean of {} against covariance {:?}", mu.len(), sigma.shape())));
        }
        if mu.iter().chain(sigma.iter()).any(|v| !v.is_finite()) {
            return Err(Error::Input("the statistics hold NaN or infinite values".into()));
        }
        let scale = sigma.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(f64::MIN_POSITIVE);
        let n = sigma.nrows();
        let asymmetry = (0..n)
            .flat_map(|i| (0..i).map(move |j| (i, j)))
            .fold(0.0f64, |m, (i, j)| m.max((sigma[(i, j)] - sigma[(j, i)]).abs()));
        if asymmetry > COVARIANCE_TOLERANCE * scale {
            return Err(Error::Input(format!(
                "the covariance is not symmetric (entries differ from their transposes by up to {asymmetry:.3e}); \
                 not a covariance"
            )));
        }
        let values = eigenvalues(&symmetric(&sigma))?;
        let largest = values.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(f64::MIN_POSITIVE);
        let smallest = values.iter().copied().fold(f64::INFINITY, f64::min);
        if smallest < -COVARIANCE_TOLERANCE * largest {
            return Err(Error::Input(format!(
                "the covariance has a negative eigenvalue ({smallest:.3e}, the largest is {largest:.3e}); \
                 not a covariance"
            )));
        }
        Ok(Self { mu, sigma })
    }

    /// `‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr √(Σ₁Σ₂)`. The trace of the square root is taken as
    /// that of the symmetric `√Σ₁ Σ₂ √Σ₁`, which has the same eigenvalues and stays real for
    /// singular covariances (negative round-off eigenvalues count as zero). The
    /// eigendecompositions are faer's: nalgebra's gave NaN eigenvalues on covariances of sFID's
    /// spatial features (2023 dimensions, hundreds of them constant), which silently read as
    /// zero.
    pub fn frechet_distance(&self, other: &Self) -> Result<f64> {
        if self.mu.len() != other.mu.len() {
            return Err(Error::Input(format!("{} against {} dimensions", self.mu.len(), other.mu.len())));
        }
        let root = symmetric_sqrt(&symmetric(&self.sigma))?;
        let product = &root * symmetric(&other.sigma) * &root;
        let product = symmetric_part(product.nrows(), |i, j| product[(i, j)]);
        let trace_root: f64 = eigenvalues(&product)?.iter().map(|&e| e.max(0.0).sqrt()).sum();
        let diff = &self.mu - &other.mu;
        let spread = diff.dot(&diff) + self.sigma.trace() + other.sigma.trace();
        let distance = spread - 2.0 * trace_root;
        if distance < -COVARIANCE_TOLERANCE * spread.abs() {
            return Err(Error::Input(format!(
                "the distance came out negative ({distance:.6e}): the statistics are damaged"
            )));
        }
        Ok(distance)
    }
}

/// The symmetric part `(A + Aᵀ) / 2` of the `n × n` matrix whose entries `at` gives, in faer's
/// layout.
fn symmetric_part(n: usize, at: impl Fn(usize, usize) -> f64) -> Mat<f64> {
    Mat::from_fn(n, n, |i, j| 0.5 * (at(i, j) + at(j, i)))
}

/// The symmetric part of a covariance.
fn symmetric(a: &DMatrix<f64>) -> Mat<f64> {
    symmetric_part(a.nrows(), |i, j| a[(i, j)])
}

/// The eigenvalues of a symmetric matrix; an error if any is not finite.
fn eigenvalues(a: &Mat<f64>) -> Result<Vec<f64>> {
    let values = a
        .self_adjoint_eigenvalues(Side::Lower)
        .map_err(|e| Error::Input(format!("the eigendecomposition of a covariance failed ({e:?})")))?;
    if values.iter().any(|v| !v.is_finite()) {
        return Err(Error::Input("a covariance has NaN or infinite eigenvalues".into()));
    }
    Ok(values)
}

/// √A of a symmetric positive semi-definite matrix (negative eigenvalues count as zero).
fn symmetric_sqrt(a: &Mat<f64>) -> Result<Mat<f64>> {
    let eigen = a
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| Error::Input(format!("the eigendecomposition of a covariance failed ({e:?})")))?;
    let (vectors, values) = (eigen.U(), eigen.S().column_vector());
    if values.iter().any(|v| !v.is_finite()) {
        return Err(Error::Input("a covariance has NaN or infinite eigenvalues".into()));
    }
    let n = a.nrows();
    let scaled = Mat::from_fn(n, n, |i, j| vectors[(i, j)] * values[j].max(0.0).sqrt());
    Ok(&scaled * vectors.transpose())
}
