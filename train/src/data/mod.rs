//! Training data: latents (or pixels), with or without class labels, read item by item.

mod lmdb;
mod manifest;
mod shards;
mod without_labels;

pub use self::lmdb::{LmdbDataset, LmdbWriter};
pub use manifest::{shards_in, ShardEntry, ShardFolder, ShardManifest, MANIFEST_FILE};
pub use shards::{write_shard, ShardDataset};
pub use without_labels::WithoutLabels;

use rand_chacha::ChaCha12Rng;
use rand_distr::{Distribution, StandardNormal};

use candle_core::Tensor;

use crate::Result;

/// One training example: an image (or latent) `(C, H, W)` flattened, and its class.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The values, channel-major.
    pub values: Vec<f32>,
    /// The class index (`None` in data without labels).
    pub label: Option<usize>,
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

    /// Whether the examples carry class labels.
    fn labeled(&self) -> bool;

    /// Checks what can be checked before training starts, for a model with `num_classes`
    /// classes (0: unconditional): every label of data held in memory, the first example of
    /// streamed data (the rest is checked as it is read).
    fn check(&self, num_classes: usize) -> Result<()>;

    /// Example `index`; latent distributions are sampled with `rng`.
    fn get(&self, index: usize, rng: &mut ChaCha12Rng) -> Result<Example>;
}

/// Draws a scaled latent from stacked moments `[mean; logvar]` (each `C·H·W` values) with the
/// VAE's formula ([`maskdit_vae::Moments::sample`]), its noise drawn from `rng`.
pub fn sample_latent(moments: &[f32], scale: f64, rng: &mut ChaCha12Rng) -> Result<Vec<f32>> {
    let half = moments.len() / 2;
    let eps: Vec<f32> = (0..half).map(|_| Distribution::<f64>::sample(&StandardNormal, rng) as f32).collect();
    let device = candle_core::Device::Cpu;
    let moments = maskdit_vae::Moments {
        mean: Tensor::from_slice(&moments[..half], half, &device)?,
        logvar: Tensor::from_slice(&moments[half..2 * half], half, &device)?,
    };
    let latent = moments.sample(&Tensor::from_vec(eps, half, &device)?, scale)?;
    Ok(latent.to_vec1()?)
}
