//! The reference initialisation of a fresh MaskDiT, as the official code draws it:
//! xavier-uniform linears, N(0, 0.02) embeddings, zeroed adaLN and output layers (the hints each
//! layer gives its var builder), and fixed 2-D sin-cos position tables (MAE convention).

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use candle_nn::Init;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::{Error, MaskDit, ModelConfig, Result};

/// Every parameter of a fresh `config` model by its official name, drawn from `rng` in the
/// model's parameter order; the position tables are the sin-cos tables.
pub fn reference_weights<R: Rng + ?Sized>(
    config: &ModelConfig,
    rng: &mut R,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let mut tensors = HashMap::new();
    for (name, shape, init) in MaskDit::parameter_specs(config)? {
        let count: usize = shape.iter().product();
        let values: Vec<f32> = match init {
            Init::Const(c) => vec![c as f32; count],
            Init::Randn { mean, stdev } => (0..count)
                .map(|_| (mean + stdev * Distribution::<f64>::sample(&StandardNormal, &mut *rng)) as f32)
                .collect(),
            Init::Uniform { lo, up } => (0..count).map(|_| rng.random_range(lo..up) as f32).collect(),
            Init::Kaiming { .. } => return Err(Error::Config(format!("no initialisation rule for `{name}`"))),
        };
        tensors.insert(name, Tensor::from_vec(values, shape, device)?);
    }
    let grid = config.grid_size();
    tensors.insert("model.pos_embed".into(), sincos_2d(config.hidden_size, grid, device)?);
    if config.use_decoder {
        tensors.insert("model.decoder_pos_embed".into(), sincos_2d(config.decoder_hidden_size, grid, device)?);
    }
    Ok(tensors)
}

/// The `(1, grid², width)` table: for the token in row `i`, column `j`, the first half of
/// the channels encodes `j` and the second half `i`, each as `[sin(p·ω), cos(p·ω)]` with
/// `ω_k = 10000^(-k / (width/4))`. Computed in f64 and rounded to f32, as the reference does.
pub fn sincos_2d(width: usize, grid: usize, device: &Device) -> Result<Tensor> {
    let quarter = width / 4;
    let omega: Vec<f64> = (0..quarter).map(|k| 1.0 / 10000f64.powf(k as f64 / quarter as f64)).collect();
    let mut table = Vec::with_capacity(grid * grid * width);
    for i in 0..grid {
        for j in 0..grid {
            for pos in [j as f64, i as f64] {
                table.extend(omega.iter().map(|w| (pos * w).sin() as f32));
                table.extend(omega.iter().map(|w| (pos * w).cos() as f32));
            }
        }
    }
    Ok(Tensor::from_vec(table, (1, grid * grid, width), device)?)
}
