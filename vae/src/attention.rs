//! The single-head spatial self-attention of the VAE's middle blocks, with its two residual
//! blocks around it. (candle-transformers' own attention block folds a transposed batch into one
//! matrix product, which candle 0.11 computes wrongly for batches larger than one.)

use candle_core::{Module, Tensor};
use candle_nn::{GroupNorm, Linear, VarBuilder};
use candle_transformers::models::stable_diffusion::resnet::{ResnetBlock2D, ResnetBlock2DConfig};

/// Reads a 1×1 projection stored either as a linear weight `(C, C)` or a conv weight `(C, C, 1, 1)`.
fn projection(vb: VarBuilder, channels: usize) -> candle_core::Result<Linear> {
    let weight = match vb.get((channels, channels), "weight") {
        Ok(w) => w,
        Err(_) => vb.get((channels, channels, 1, 1), "weight")?.reshape((channels, channels))?,
    };
    Ok(Linear::new(weight, Some(vb.get(channels, "bias")?)))
}

/// Group norm, then softmax(q·kᵀ/√C)·v over the spatial positions, projected, plus the input.
struct SpatialAttention {
    norm: GroupNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
}

impl SpatialAttention {
    fn new(vb: VarBuilder, channels: usize, groups: usize, eps: f64) -> candle_core::Result<Self> {
        Ok(Self {
            norm: candle_nn::group_norm(groups, channels, eps, vb.pp("group_norm"))?,
            q: projection(vb.pp("to_q"), channels)?,
            k: projection(vb.pp("to_k"), channels)?,
            v: projection(vb.pp("to_v"), channels)?,
            out: projection(vb.pp("to_out.0"), channels)?,
        })
    }
}

impl Module for SpatialAttention {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let tokens = self.norm.forward(x)?.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous()?;
        let q = self.q.forward(&tokens)?;
        let k = self.k.forward(&tokens)?;
        let v = self.v.forward(&tokens)?;
        let scores = (q.matmul(&k.t()?.contiguous()?)? / (c as f64).sqrt())?;
        let attended = candle_nn::ops::softmax_last_dim(&scores)?.matmul(&v)?;
        let projected = self.out.forward(&attended)?.transpose(1, 2)?.reshape((b, c, h, w))?;
        projected + x
    }
}

/// Residual block, attention, residual block: the middle of the encoder and of the decoder.
pub(crate) struct MidBlock {
    first: ResnetBlock2D,
    attention: SpatialAttention,
    second: ResnetBlock2D,
}

impl MidBlock {
    pub fn new(vb: VarBuilder, channels: usize, groups: usize, eps: f64) -> candle_core::Result<Self> {
        let cfg = ResnetBlock2DConfig { eps, groups, temb_channels: None, ..Default::default() };
        Ok(Self {
            first: ResnetBlock2D::new(vb.pp("resnets.0"), channels, cfg)?,
            attention: SpatialAttention::new(vb.pp("attentions.0"), channels, groups, eps)?,
            second: ResnetBlock2D::new(vb.pp("resnets.1"), channels, cfg)?,
        })
    }
}

impl Module for MidBlock {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.first.forward(x, None)?;
        let h = self.attention.forward(&h)?;
        self.second.forward(&h, None)
    }
}
