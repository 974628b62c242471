//! How images become the FID Inception's input: resized to 299×299 and scaled, in one of the two
//! ways the published numbers were computed.

use candle_core::{DType, Tensor};

use crate::inception::INPUT_SIDE;
use crate::{Error, Result};

/// The way images are resized and scaled for the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputMode {
    /// pytorch-fid's: `x / 255` resized by PyTorch's bilinear interpolation (half-pixel
    /// centres, `align_corners=False`, no antialiasing), then `2x − 1`. FID as pytorch-fid
    /// computes it; the parity suite checks this path.
    #[default]
    PytorchFid,
    /// ADM's evaluator (`evaluator.py`, the paper's sFID, precision and recall and the FID of
    /// ADM-style tables): the 2015 TensorFlow graph's own `ResizeBilinear` (TF1's legacy
    /// bilinear: no half-pixel offset) on 0–255 values, then the graph's `(x − 128) / 128`.
    Adm,
}

impl InputMode {
    /// Turns `(N, 3, H, W)` u8 pixels into the network's input `(N, 3, 299, 299)` f32, in the
    /// scale [`crate::FidInception::forward`] takes (it applies `2x − 1`).
    pub fn prepare(self, pixels: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = pixels.dims4()?;
        if c != 3 || h == 0 || w == 0 {
            return Err(Error::Input(format!("images must be (N, 3, H, W), not {:?}", pixels.dims())));
        }
        // The forward pass computes 2x − 1: x = v / 255 gives pytorch-fid's scaling, x = v / 256
        // gives the TensorFlow graph's (v − 128) / 128.
        let divisor = match self {
            Self::PytorchFid => 255.0,
            Self::Adm => 256.0,
        };
        let x = (pixels.to_dtype(DType::F32)? / divisor)?;
        if (h, w) == (INPUT_SIDE, INPUT_SIDE) {
            return Ok(x);
        }
        let device = pixels.device();
        let rows = Tensor::from_vec(self.interpolation(h, INPUT_SIDE), (INPUT_SIDE, h), device)?;
        let columns = Tensor::from_vec(self.interpolation(w, INPUT_SIDE), (INPUT_SIDE, w), device)?.t()?;
        // Along the width first, then the height, as both libraries weigh the four neighbours.
        let x = x.broadcast_matmul(&columns)?;
        Ok(rows.broadcast_matmul(&x)?)
    }

    /// The interpolation matrix `(output, input)` of the bilinear resize along one axis: row
    /// `o` weighs the two inputs around its source position, `(o + 0.5) · in / out − 0.5`
    /// clamped at 0 for PyTorch, `o · in / out` for TF1's legacy resize.
    fn interpolation(self, input: usize, output: usize) -> Vec<f32> {
        let scale = input as f32 / output as f32;
        let mut m = vec![0f32; output * input];
        for o in 0..output {
            let source = match self {
                Self::PytorchFid => (scale * (o as f32 + 0.5) - 0.5).max(0.0),
                Self::Adm => scale * o as f32,
            };
            let i0 = (source as usize).min(input - 1);
            let i1 = (i0 + 1).min(input - 1);
            let lambda1 = source - i0 as f32;
            m[o * input + i0] += 1.0 - lambda1;
            m[o * input + i1] += lambda1;
        }
        m
    }
}
