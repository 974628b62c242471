//! Precision and recall of a sample set against a reference set (Kynkäänniemi et al. 2019), as
//! ADM's evaluator computes them on the 2048-d pool features: each set's manifold is the union of
//! balls around its features, each ball's squared radius the squared Euclidean distance to the
//! feature's 3rd nearest neighbour in its own set (itself excluded). Precision is the share of
//! samples inside the reference manifold (distance ≤ radius of at least one reference feature),
//! recall the share of reference features inside the sample manifold.
//!
//! Distances come in blocks (`|u|² + |v|² − 2u·v`, clamped at 0, as ADM computes them), so two
//! sets of 50,000 features need a few hundred MB, on the CPU or the GPU. ADM computes the blocks
//! in float16 when they stay finite; here they are f32 throughout: float16 keeps about three
//! significant digits, enough to flip a comparison whose two distances differ by less than 0.1%,
//! and on the CPU it would also be slower. The shares can therefore differ from ADM's in the
//! last digits on sets where such near-ties occur.

use candle_core::{DType, Device, Tensor, D};

use crate::{Error, Result};

/// The neighbour whose distance is a feature's radius (the 3rd nearest, as ADM's `nhood_sizes`).
pub const NEIGHBOURHOOD: usize = 3;
/// Features per block of rows.
const ROW_BLOCK: usize = 1024;
/// Features per block of columns.
const COLUMN_BLOCK: usize = 8192;

/// Precision and recall of a sample set against a reference set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrecisionRecall {
    /// Share of samples inside the reference manifold.
    pub precision: f64,
    /// Share of reference features inside the sample manifold.
    pub recall: f64,
}

/// Features of one set on the device with their squared norms.
struct FeatureSet {
    features: Tensor,
    norms: Tensor,
}

impl FeatureSet {
    fn new(values: &[f32], dims: usize, device: &Device, what: &str) -> Result<Self> {
        if dims == 0 || !values.len().is_multiple_of(dims) {
            return Err(Error::Input(format!("{what}: {} values are not rows of {dims}", values.len())));
        }
        let count = values.len() / dims;
        if count <= NEIGHBOURHOOD {
            return Err(Error::Input(format!(
                "{what}: {count} features; precision and recall need more than {NEIGHBOURHOOD}"
            )));
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(Error::Input(format!("{what}: the features hold NaN or infinite values")));
        }
        let features = Tensor::from_slice(values, (count, dims), device)?;
        let norms = features.sqr()?.sum(D::Minus1)?;
        Ok(Self { features, norms })
    }

    fn len(&self) -> usize {
        self.norms.dims()[0]
    }

    /// Squared distances between features `rows` of `self` and `columns` of `other`, row-major.
    fn distances(
        &self,
        other: &Self,
        rows: std::ops::Range<usize>,
        columns: std::ops::Range<usize>,
    ) -> Result<Vec<f32>> {
        let u = self.features.narrow(0, rows.start, rows.len())?;
        let v = other.features.narrow(0, columns.start, columns.len())?;
        let products = u.matmul(&v.t()?)?;
        let nu = self.norms.narrow(0, rows.start, rows.len())?.unsqueeze(1)?;
        let nv = other.norms.narrow(0, columns.start, columns.len())?.unsqueeze(0)?;
        let d = (products * -2.0)?.broadcast_add(&nu)?.broadcast_add(&nv)?.relu()?;
        Ok(d.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    }
}

/// Blocks `0..n` into ranges of at most `block`.
fn blocks(n: usize, block: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..n).step_by(block).map(move |start| start..(start + block).min(n))
}

/// Each feature's squared radius: the squared distance to its [`NEIGHBOURHOOD`]-th nearest
/// neighbour in its own set, itself excluded.
fn radii(set: &FeatureSet) -> Result<Vec<f32>> {
    let n = set.len();
    let mut nearest = vec![[f32::INFINITY; NEIGHBOURHOOD]; n];
    for rows in blocks(n, ROW_BLOCK) {
        for columns in blocks(n, COLUMN_BLOCK) {
            let d = set.distances(set, rows.clone(), columns.clone())?;
            for (r, row) in rows.clone().zip(d.chunks_exact(columns.len())) {
                let kept = &mut nearest[r];
                for (c, &value) in columns.clone().zip(row) {
                    if c != r && value < kept[NEIGHBOURHOOD - 1] {
                        let at = kept.iter().position(|&k| value < k).unwrap_or(NEIGHBOURHOOD - 1);
                        kept.copy_within(at..NEIGHBOURHOOD - 1, at + 1);
                        kept[at] = value;
                    }
                }
            }
        }
    }
    Ok(nearest.into_iter().map(|k| k[NEIGHBOURHOOD - 1]).collect())
}

/// Precision and recall of `samples` against `reference`, both row-major `(n, dims)` pool
/// features, with the distances computed on `device`. Each set needs more than
/// [`NEIGHBOURHOOD`] features.
pub fn precision_recall(samples: &[f32], reference: &[f32], dims: usize, device: &Device) -> Result<PrecisionRecall> {
    let samples = FeatureSet::new(samples, dims, device, "samples")?;
    let reference = FeatureSet::new(reference, dims, device, "reference")?;
    let (sample_radii, reference_radii) = (radii(&samples)?, radii(&reference)?);
    let mut sample_inside = vec![false; samples.len()];
    let mut reference_inside = vec![false; reference.len()];
    for rows in blocks(reference.len(), ROW_BLOCK) {
        for columns in blocks(samples.len(), COLUMN_BLOCK) {
            let d = reference.distances(&samples, rows.clone(), columns.clone())?;
            for (r, row) in rows.clone().zip(d.chunks_exact(columns.len())) {
                for (c, &value) in columns.clone().zip(row) {
                    sample_inside[c] |= value <= reference_radii[r];
                    reference_inside[r] |= value <= sample_radii[c];
                }
            }
        }
    }
    let share = |flags: &[bool]| flags.iter().filter(|&&f| f).count() as f64 / flags.len() as f64;
    Ok(PrecisionRecall { precision: share(&sample_inside), recall: share(&reference_inside) })
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::{precision_recall, PrecisionRecall};

    /// Points on a line: the reference at 0, 1, …, 9, whose squared radii (3rd neighbour) are 4,
    /// or 9 near the ends; the samples at 0.5, …, 8.5, each 0.5 from a reference point, and one
    /// at 100, far outside the reference manifold.
    #[test]
    fn shares_on_a_line_are_exact() {
        let reference: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let mut samples: Vec<f32> = (0..9).map(|i| i as f32 + 0.5).collect();
        samples.push(100.0);
        let got = precision_recall(&samples, &reference, 1, &Device::Cpu).unwrap();
        // Every reference point lies 0.5 from a sample whose squared radius is at least 4.
        assert_eq!(got, PrecisionRecall { precision: 0.9, recall: 1.0 });
    }

    #[test]
    fn too_few_or_bad_features_are_refused() {
        assert!(precision_recall(&[0.0; 6], &[0.0; 10], 2, &Device::Cpu).is_err());
        assert!(precision_recall(&[0.0; 10], &[0.0; 9], 2, &Device::Cpu).is_err());
        let mut nan = vec![0.0; 10];
        nan[3] = f32::NAN;
        assert!(precision_recall(&nan, &[0.0; 10], 1, &Device::Cpu).is_err());
    }
}
