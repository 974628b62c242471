//! Fixed 2-D sin-cos position tables (MAE convention).

use candle_core::{Device, Tensor};

use crate::Result;

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
