//! The EDM training loss, with MaskDiT's masked variant and its MAE reconstruction term.

use candle_core::{DType, Tensor, D};

use maskdit::{Mask, MaskDit};

use crate::Result;

/// EDM's noise distribution and weighting (ln σ ~ N(P_mean, P_std²), σ_data = 0.5), plus the
/// weight of the MAE loss in masked training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EdmLoss {
    /// Mean of ln σ.
    pub p_mean: f64,
    /// Standard deviation of ln σ.
    pub p_std: f64,
    /// Standard deviation of the data.
    pub sigma_data: f64,
    /// Weight of the MAE loss on the removed patches (0: none).
    pub mae_loss_coef: f64,
}

impl EdmLoss {
    /// EDM's defaults with the given MAE weight.
    pub fn new(mae_loss_coef: f64) -> Self {
        Self { p_mean: -1.2, p_std: 1.2, sigma_data: 0.5, mae_loss_coef }
    }

    /// Per-sample losses `(N,)` for clean `images` `(N, C, H, W)`, with the randomness given:
    /// `rnd_normal` `(N,)` picks σ = exp(rnd·P_std + P_mean), `noise` `(N, C, H, W)` is unit
    /// normal. With a mask, the denoising loss is the channel-mean weighted squared error
    /// averaged per patch and over kept patches, plus `mae_loss_coef` × the MAE loss on the
    /// removed patches; without, the mean over all elements.
    pub fn per_sample(
        &self,
        model: &MaskDit,
        images: &Tensor,
        labels: Option<&Tensor>,
        rnd_normal: &Tensor,
        noise: &Tensor,
        mask: Option<&Mask>,
    ) -> Result<Tensor> {
        let n = images.dim(0)?;
        let sigma = ((rnd_normal.flatten_all()?.to_dtype(DType::F32)? * self.p_std)? + self.p_mean)?.exp()?;
        let s = sigma.reshape((n, 1, 1, 1))?;
        let sd2 = self.sigma_data * self.sigma_data;
        let weight = ((s.sqr()? + sd2)? / (&s * self.sigma_data)?.sqr()?)?;
        let noisy = (images + noise.broadcast_mul(&s)?)?;
        let denoised = model.denoise_train(&noisy, &sigma, labels, mask)?;
        let err = (&denoised - images)?.sqr()?.broadcast_mul(&weight)?;
        let Some(mask) = mask else {
            return Ok(err.flatten_from(1)?.mean(1)?);
        };
        let p = model.config().patch_size;
        let per_patch = patchify(&err.mean_keepdim(1)?, p)?.mean(D::Minus1)?;
        let removed = mask.binary().to_dtype(per_patch.dtype())?;
        let kept = (1.0 - &removed)?;
        let loss = ((per_patch * &kept)?.sum(1)? / kept.sum(1)?)?;
        if self.mae_loss_coef > 0.0 && mask.kept() < removed.dim(1)? {
            let mae = mae_loss(&noisy, &denoised, &removed, p)?;
            return Ok((loss + (mae * self.mae_loss_coef)?)?);
        }
        Ok(loss)
    }
}

/// `(N, C, H, W)` → `(N, L, p²·C)`, each patch flattened in (row, column, channel) order.
pub fn patchify(x: &Tensor, p: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (gh, gw) = (h / p, w / p);
    Ok(x.reshape((n, c, gh, p, gw, p))?.permute((0, 2, 4, 3, 5, 1))?.reshape((n, gh * gw, p * p * c))?)
}

/// MAE loss: squared error between the prediction and the per-patch normalised target
/// (unbiased variance, eps 1e-6), averaged per patch and over the `removed` `(N, L)` patches.
pub fn mae_loss(target: &Tensor, prediction: &Tensor, removed: &Tensor, p: usize) -> Result<Tensor> {
    let target = patchify(target, p)?;
    let prediction = patchify(prediction, p)?;
    let k = target.dim(D::Minus1)?;
    let mean = target.mean_keepdim(D::Minus1)?;
    let centred = target.broadcast_sub(&mean)?;
    let var = (centred.sqr()?.sum_keepdim(D::Minus1)? / (k as f64 - 1.0).max(1.0))?;
    let normalised = centred.broadcast_div(&(var + 1e-6)?.sqrt()?)?;
    let per_patch = (prediction - normalised)?.sqr()?.mean(D::Minus1)?;
    Ok(((per_patch * removed)?.sum(1)? / removed.sum(1)?)?)
}
