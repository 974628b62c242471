//! Inception features of an image set, and the scores computed from them.

use candle_core::{DType, Tensor};

use crate::image_set::ImageSet;
use crate::inception::{FidInception, FEATURE_DIMS, LOGITS, SPATIAL_DIMS};
use crate::npz::EvaluationFile;
use crate::{Error, Result, Statistics};

/// What the network gives for every image of a set, row-major `(images, dims)`.
#[derive(Debug, Clone, Default)]
pub struct SetFeatures {
    /// The 2048-d pool features FID, precision and recall use.
    pub pool: Vec<f32>,
    /// The 2023-d spatial features sFID uses.
    pub spatial: Vec<f32>,
    /// The 1008 logits without the classifier's bias (what the original Inception Score code
    /// and torch-fidelity use).
    pub unbiased_logits: Vec<f32>,
}

impl SetFeatures {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.pool.len() / FEATURE_DIMS
    }

    /// Whether no image was seen.
    pub fn is_empty(&self) -> bool {
        self.pool.is_empty()
    }

    /// Mean and covariance of the pool features (FID's statistics).
    pub fn statistics(&self) -> Result<Statistics> {
        Statistics::from_features(&self.pool, FEATURE_DIMS)
    }

    /// Mean and covariance of the spatial features (sFID's statistics).
    pub fn spatial_statistics(&self) -> Result<Statistics> {
        Statistics::from_features(&self.spatial, SPATIAL_DIMS)
    }

    /// The statistics of both kinds of features, and the pool features when `keep_features`.
    pub fn evaluation_file(&self, keep_features: bool) -> Result<EvaluationFile> {
        Ok(EvaluationFile {
            statistics: Some(self.statistics()?),
            spatial_statistics: Some(self.spatial_statistics()?),
            pool_features: keep_features.then(|| self.pool.clone()),
        })
    }

    /// The Inception Score over `splits` equal parts (the remainder is left out, as the
    /// original code does): `exp E[KL(p(y|x) ‖ p(y))]` per part with p from the softmax over
    /// all 1008 unbiased logits, returned as the mean and standard deviation over the parts.
    pub fn inception_score(&self, splits: usize) -> Result<(f64, f64)> {
        let n = self.len();
        if splits == 0 || n < splits {
            return Err(Error::Input(format!("{n} images cannot be split into {splits} parts")));
        }
        let probabilities: Vec<Vec<f64>> = self
            .unbiased_logits
            .chunks(LOGITS)
            .map(|row| {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let exp: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
                let total: f64 = exp.iter().sum();
                exp.into_iter().map(|e| e / total).collect()
            })
            .collect();
        let part = n / splits;
        let scores: Vec<f64> = probabilities
            .chunks_exact(part)
            .take(splits)
            .map(|rows| {
                let marginal: Vec<f64> =
                    (0..LOGITS).map(|c| rows.iter().map(|p| p[c]).sum::<f64>() / rows.len() as f64).collect();
                let kl: f64 = rows
                    .iter()
                    .map(|p| {
                        p.iter()
                            .zip(&marginal)
                            .filter(|(&pc, _)| pc > 0.0)
                            .map(|(&pc, &mc)| pc * (pc.ln() - mc.ln()))
                            .sum::<f64>()
                    })
                    .sum::<f64>()
                    / rows.len() as f64;
                kl.exp()
            })
            .collect();
        let mean = scores.iter().sum::<f64>() / scores.len() as f64;
        let var = scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / scores.len() as f64;
        Ok((mean, var.sqrt()))
    }
}

impl FidInception {
    /// Runs the network over every image of `set`, `batch` images at a time, calling
    /// `progress` with the number of images done. Non-finite features are an error.
    pub fn extract(&self, set: &ImageSet, batch: usize, progress: &mut dyn FnMut(usize)) -> Result<SetFeatures> {
        let mut out = SetFeatures::default();
        set.for_each_batch(batch, &mut |pixels| {
            self.extend(&mut out, &pixels)?;
            progress(out.len());
            Ok(())
        })
        .map(|()| out)
    }

    /// Adds the features of `(N, 3, H, W)` u8 images to `features`. Non-finite features are an
    /// error.
    pub fn extend(&self, features: &mut SetFeatures, pixels: &Tensor) -> Result<()> {
        let (done, count) = (features.len(), pixels.dim(0)?);
        let input = self.input_mode().prepare(&pixels.to_device(self.device())?)?;
        let output = self.forward(&input)?;
        let logits = output.pool.matmul(&self.classifier_weight().t()?)?;
        let pool = output.pool.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let spatial = output.spatial.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        if pool.iter().chain(&spatial).any(|v| !v.is_finite()) {
            return Err(Error::Input(format!(
                "the network gave NaN or infinite features for images {done}..{}",
                done + count
            )));
        }
        features.pool.extend(pool);
        features.spatial.extend(spatial);
        features.unbiased_logits.extend(logits.flatten_all()?.to_vec1::<f32>()?);
        Ok(())
    }
}
