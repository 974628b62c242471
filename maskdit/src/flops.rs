//! Model FLOPs (multiply-adds count 2), for benchmarks and utilisation figures.

use crate::ModelConfig;

fn block_flops(batch: f64, tokens: f64, width: f64, cond: f64, mlp_ratio: f64) -> f64 {
    let ada = 2.0 * batch * cond * 6.0 * width;
    let qkv_proj = 2.0 * batch * tokens * width * 4.0 * width;
    let attention = 2.0 * 2.0 * batch * tokens * tokens * width;
    let mlp = 2.0 * 2.0 * batch * tokens * width * mlp_ratio * width;
    ada + qkv_proj + attention + mlp
}

/// FLOPs of one forward pass over `batch` images with `kept` of the tokens in the encoder
/// (all of them when unmasked).
pub fn forward_flops(config: &ModelConfig, batch: usize, kept: usize) -> f64 {
    let c = config;
    let (n, d, l) = (batch as f64, c.hidden_size as f64, c.num_patches() as f64);
    let k = kept as f64;
    let patch_in = (c.in_channels * c.patch_size * c.patch_size) as f64;
    let mut total = 2.0 * n * k * patch_in * d;
    total += 2.0 * n * (256.0 * d + d * d) + 2.0 * n * c.num_classes as f64 * d;
    total += c.depth as f64 * block_flops(n, k, d, d, c.mlp_ratio);
    let final_width = if c.use_decoder {
        let dd = c.decoder_hidden_size as f64;
        total += 2.0 * n * k * d * dd + 2.0 * n * d * 2.0 * d;
        total += c.decoder_depth as f64 * block_flops(n, l, dd, d, c.mlp_ratio);
        (dd, l)
    } else {
        (d, k)
    };
    total + 2.0 * n * final_width.1 * final_width.0 * patch_in + 2.0 * n * d * 2.0 * final_width.0
}

/// FLOPs of a training step (forward, backward ≈ 2× forward).
pub fn train_step_flops(config: &ModelConfig, batch: usize, kept: usize) -> f64 {
    3.0 * forward_flops(config, batch, kept)
}
