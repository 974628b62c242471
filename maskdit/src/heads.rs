//! The layers after the blocks: the encoder→decoder projection and the final patch projection.

use candle_core::Tensor;
use candle_nn::{Init, VarBuilder};

use crate::ops::{layer_norm, modulate, Linear, Pass};
use crate::Result;

/// A modulated layer norm followed by a linear map: the reference's `DecoderLayer`
/// (encoder width → decoder width) and `FinalLayer` (width → p²·channels) share this shape.
#[derive(Debug, Clone)]
pub struct ModulatedProjection {
    linear: Linear,
    ada_ln: Linear,
}

impl ModulatedProjection {
    /// Reads `linear` (in → out) and `adaLN_modulation.1` (cond → 2·in); both start at zero
    /// in a fresh model (adaLN-Zero).
    pub fn new(vb: &VarBuilder, in_width: usize, out_width: usize, cond_width: usize) -> Result<Self> {
        let linear = Linear::new(&vb.pp("linear"), in_width, out_width, true, Init::Const(0.0))?;
        let ada_ln = Linear::new(&vb.pp("adaLN_modulation.1"), cond_width, 2 * in_width, true, Init::Const(0.0))?;
        Ok(Self { linear, ada_ln })
    }

    /// `x` `(N, L, in)`, `c` `(N, cond)` → `(N, L, out)`.
    pub fn forward(&self, x: &Tensor, c: &Tensor, pass: Pass) -> Result<Tensor> {
        let m = self.ada_ln.apply(&c.silu()?, pass)?.chunk(2, 1)?;
        let h = modulate(&layer_norm(x, pass)?, &m[0], &m[1])?;
        self.linear.apply(&h, pass)
    }
}
