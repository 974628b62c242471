//! The adaLN-Zero DiT block: attention and MLP, each modulated and gated by the condition.

use candle_core::Tensor;
use candle_nn::{Init, VarBuilder};

use crate::embed::xavier_uniform;
use crate::ops::{attention, gated_residual, gelu, layer_norm, modulate, Linear, Pass};
use crate::Result;

/// Multi-head self-attention with a fused qkv projection.
#[derive(Debug, Clone)]
pub struct Attention {
    qkv: Linear,
    proj: Linear,
    heads: usize,
}

impl Attention {
    /// Reads `qkv` and `proj`.
    pub fn new(vb: &VarBuilder, width: usize, heads: usize) -> Result<Self> {
        let qkv = Linear::new(&vb.pp("qkv"), width, 3 * width, true, xavier_uniform(width, 3 * width))?;
        let proj = Linear::new(&vb.pp("proj"), width, width, true, xavier_uniform(width, width))?;
        Ok(Self { qkv, proj, heads })
    }

    /// `(N, L, width)` → `(N, L, width)`.
    pub fn forward(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        let out = attention(&self.qkv.apply(x, pass)?, self.heads, pass)?;
        self.proj.apply(&out, pass)
    }
}

/// Two linear layers with a tanh-approximated GELU between them.
#[derive(Debug, Clone)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    /// Reads `fc1` and `fc2`.
    pub fn new(vb: &VarBuilder, width: usize, hidden: usize) -> Result<Self> {
        let fc1 = Linear::new(&vb.pp("fc1"), width, hidden, true, xavier_uniform(width, hidden))?;
        let fc2 = Linear::new(&vb.pp("fc2"), hidden, width, true, xavier_uniform(hidden, width))?;
        Ok(Self { fc1, fc2 })
    }

    /// `(N, L, width)` → `(N, L, width)`.
    pub fn forward(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        self.fc2.apply(&gelu(&self.fc1.apply(x, pass)?)?, pass)
    }
}

/// A DiT block of width `width` conditioned on a vector of width `cond_width`.
#[derive(Debug, Clone)]
pub struct DitBlock {
    attn: Attention,
    mlp: Mlp,
    ada_ln: Linear,
}

impl DitBlock {
    /// Reads `attn`, `mlp` and `adaLN_modulation.1`.
    pub fn new(vb: &VarBuilder, width: usize, cond_width: usize, heads: usize, mlp_ratio: f64) -> Result<Self> {
        let attn = Attention::new(&vb.pp("attn"), width, heads)?;
        let mlp = Mlp::new(&vb.pp("mlp"), width, (width as f64 * mlp_ratio) as usize)?;
        let ada_ln = Linear::new(&vb.pp("adaLN_modulation.1"), cond_width, 6 * width, true, Init::Const(0.0))?;
        Ok(Self { attn, mlp, ada_ln })
    }

    /// `x` `(N, L, width)`, `c` `(N, cond_width)` → `(N, L, width)`.
    pub fn forward(&self, x: &Tensor, c: &Tensor, pass: Pass) -> Result<Tensor> {
        let m = self.ada_ln.apply(&c.silu()?, pass)?.chunk(6, 1)?;
        let (shift_msa, scale_msa, gate_msa) = (&m[0], &m[1], &m[2]);
        let (shift_mlp, scale_mlp, gate_mlp) = (&m[3], &m[4], &m[5]);
        let h = modulate(&layer_norm(x, pass)?, shift_msa, scale_msa)?;
        let x = gated_residual(x, &self.attn.forward(&h, pass)?, gate_msa)?;
        let h = modulate(&layer_norm(&x, pass)?, shift_mlp, scale_mlp)?;
        gated_residual(&x, &self.mlp.forward(&h, pass)?, gate_mlp)
    }
}
