//! Input embedders: patches, diffusion time, class labels.

use candle_core::{DType, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::ops::{Linear, Pass};
use crate::Result;

/// Xavier-uniform initialisation for a `(fan_out, fan_in)` weight, as the reference uses.
pub(crate) fn xavier_uniform(fan_in: usize, fan_out: usize) -> Init {
    let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
    Init::Uniform { lo: -bound, up: bound }
}

/// Non-overlapping `p×p` patches projected to tokens (the reference's stride-`p` convolution,
/// computed as one matrix product).
#[derive(Debug, Clone)]
pub struct PatchEmbed {
    proj: Linear,
    patch: usize,
}

impl PatchEmbed {
    /// Reads `proj.weight` (width, channels, p, p) and `proj.bias`.
    pub fn new(vb: &VarBuilder, channels: usize, width: usize, patch: usize) -> Result<Self> {
        let vb = vb.pp("proj");
        let fan_in = channels * patch * patch;
        let weight = vb.get_with_hints((width, channels, patch, patch), "weight", xavier_uniform(fan_in, width))?;
        let bias = vb.get_with_hints(width, "bias", Init::Const(0.0))?;
        let proj = Linear::from_parts(weight.reshape((width, fan_in))?, Some(bias));
        Ok(Self { proj, patch })
    }

    /// `(N, C, H, W)` → `(N, (H/p)·(W/p), width)`, tokens in row-major patch order.
    pub fn forward(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let p = self.patch;
        let (gh, gw) = (h / p, w / p);
        let patches = x.reshape((n, c, gh, p, gw, p))?.permute((0, 2, 4, 1, 3, 5))?.reshape((n, gh * gw, c * p * p))?;
        self.proj.apply(&patches, pass)
    }
}

/// Sinusoidal features of the noise level followed by a two-layer SiLU MLP.
#[derive(Debug, Clone)]
pub struct TimestepEmbedder {
    fc1: Linear,
    fc2: Linear,
}

/// Width of the sinusoidal features fed to the time MLP.
pub const FREQUENCY_EMBEDDING_SIZE: usize = 256;

impl TimestepEmbedder {
    /// Reads `mlp.0` and `mlp.2`.
    pub fn new(vb: &VarBuilder, width: usize) -> Result<Self> {
        let fc1 = Linear::new(
            &vb.pp("mlp.0"),
            FREQUENCY_EMBEDDING_SIZE,
            width,
            true,
            Init::Randn { mean: 0.0, stdev: 0.02 },
        )?;
        let fc2 = Linear::new(&vb.pp("mlp.2"), width, width, true, Init::Randn { mean: 0.0, stdev: 0.02 })?;
        Ok(Self { fc1, fc2 })
    }

    /// `[cos(t·f), sin(t·f)]` with `f_k = exp(−ln(10⁴)·k / 128)`, for `t` of shape `(N,)`.
    pub fn frequencies(t: &Tensor) -> Result<Tensor> {
        let half = FREQUENCY_EMBEDDING_SIZE / 2;
        let log_period = -(10000f64.ln() as f32);
        let freqs: Vec<f32> = (0..half).map(|k| (log_period * k as f32 / half as f32).exp()).collect();
        let freqs = Tensor::from_vec(freqs, (1, half), t.device())?;
        let args = t.to_dtype(DType::F32)?.unsqueeze(1)?.broadcast_mul(&freqs)?;
        Ok(Tensor::cat(&[args.cos()?, args.sin()?], 1)?)
    }

    /// `(N,)` noise conditioning → `(N, width)`.
    pub fn forward(&self, t: &Tensor, dtype: DType, pass: Pass) -> Result<Tensor> {
        let features = Self::frequencies(t)?.to_dtype(dtype)?;
        let hidden = self.fc1.apply(&features, pass)?.silu()?;
        self.fc2.apply(&hidden, pass)
    }
}

/// One-hot label rows through a bias-free linear layer; an all-zero row is the null label.
#[derive(Debug, Clone)]
pub struct LabelEmbedder {
    table: Linear,
}

impl LabelEmbedder {
    /// Reads `embedding_table.weight` (width, classes).
    pub fn new(vb: &VarBuilder, num_classes: usize, width: usize) -> Result<Self> {
        let table =
            Linear::new(&vb.pp("embedding_table"), num_classes, width, false, Init::Randn { mean: 0.0, stdev: 0.02 })?;
        Ok(Self { table })
    }

    /// `(N, classes)` one-hot rows → `(N, width)`.
    pub fn forward(&self, labels: &Tensor, pass: Pass) -> Result<Tensor> {
        self.table.apply(labels, pass)
    }
}
