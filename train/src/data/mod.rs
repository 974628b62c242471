//! Training data: latents (or pixels) with class labels, read item by item.

mod lmdb;
mod shards;

pub use self::lmdb::{LmdbDataset, LmdbWriter};
pub use shards::{write_shard, ShardDataset};

use rand_chacha::ChaCha12Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::Result;

/// One training example: an image (or latent) `(C, H, W)` flattened, and its class.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The values, channel-major.
    pub values: Vec<f32>,
    /// The class index.
    pub label: usize,
}

/// A source of training examples.
pub trait Dataset: Send {
    /// Number of examples.
    fn len(&self) -> usize;

    /// Whether there are no examples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shape `(C, H, W)` of an example.
    fn dims(&self) -> [usize; 3];

    /// Example `index`; latent distributions are sampled with `rng`.
    fn get(&self, index: usize, rng: &mut ChaCha12Rng) -> Result<Example>;
}

/// Draws a scaled latent `scale · (mean + exp(½·clamp(logvar, −30, 20)) · ε)` from stacked
/// moments `[mean; logvar]` (each `C·H·W` values).
pub fn sample_latent(moments: &[f32], scale: f64, rng: &mut ChaCha12Rng) -> Vec<f32> {
    let half = moments.len() / 2;
    let (mean, logvar) = moments.split_at(half);
    mean.iter()
        .zip(logvar)
        .map(|(&m, &lv)| {
            let eps: f64 = StandardNormal.sample(rng);
            let std = (0.5 * (lv as f64).clamp(-30.0, 20.0)).exp();
            (scale * (m as f64 + std * eps)) as f32
        })
        .collect()
}
