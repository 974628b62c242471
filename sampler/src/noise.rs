//! Where the samplers' random numbers come from.

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::{Error, Result};

/// A source of standard normal noise for a batch, one draw per sampler step that needs one.
pub trait NoiseSource {
    /// Standard normal noise of shape `dims` `(N, ...)` for step `step`, in f64 on `device`.
    fn noise(&mut self, step: usize, dims: &[usize], device: &Device) -> Result<Tensor>;
}

/// One random stream per image, seeded by the image's seed: an image depends on its seed and
/// the settings only, never on the batch it was drawn in or its position there.
#[derive(Debug, Clone)]
pub struct SeededNoise {
    streams: Vec<ChaCha12Rng>,
}

impl SeededNoise {
    /// One stream per seed, in batch order.
    pub fn new(seeds: &[u64]) -> Self {
        Self { streams: seeds.iter().map(|&s| ChaCha12Rng::seed_from_u64(s)).collect() }
    }

    /// Draws the initial latents `(N, C, H, W)` (f32): each image's first draws of its stream.
    pub fn latents(&mut self, image_dims: &[usize], device: &Device) -> Result<Tensor> {
        let mut dims = vec![self.streams.len()];
        dims.extend_from_slice(image_dims);
        self.draw(&dims, device)?.to_dtype(DType::F32).map_err(Into::into)
    }

    /// Uniform class indices in `0..classes`, one per image, drawn from each image's stream.
    pub fn class_indices(&mut self, classes: usize) -> Vec<usize> {
        use rand::Rng;
        self.streams.iter_mut().map(|rng| rng.random_range(0..classes)).collect()
    }

    fn draw(&mut self, dims: &[usize], device: &Device) -> Result<Tensor> {
        if dims.first() != Some(&self.streams.len()) {
            return Err(Error::Noise(format!("asked for {dims:?} but the source holds {} seeds", self.streams.len())));
        }
        let per_image: usize = dims[1..].iter().product();
        let mut values = Vec::with_capacity(per_image * self.streams.len());
        for rng in &mut self.streams {
            values.extend((0..per_image).map(|_| -> f64 { StandardNormal.sample(rng) }));
        }
        Ok(Tensor::from_vec(values, dims, device)?)
    }
}

impl NoiseSource for SeededNoise {
    fn noise(&mut self, _step: usize, dims: &[usize], device: &Device) -> Result<Tensor> {
        self.draw(dims, device)
    }
}

/// Noise recorded elsewhere, `(steps, N, ...)`: step `k` gets slice `k` (for tests against a
/// reference implementation).
#[derive(Debug, Clone)]
pub struct RecordedNoise {
    steps: Tensor,
}

impl RecordedNoise {
    /// Wraps a `(steps, N, ...)` tensor.
    pub fn new(steps: Tensor) -> Self {
        Self { steps }
    }
}

impl NoiseSource for RecordedNoise {
    fn noise(&mut self, step: usize, dims: &[usize], device: &Device) -> Result<Tensor> {
        let available = self.steps.dim(0)?;
        if step >= available {
            return Err(Error::Noise(format!("step {step} asked for, only {available} recorded")));
        }
        let slice = self.steps.get(step)?;
        if slice.dims() != dims {
            return Err(Error::Noise(format!("recorded noise has shape {:?}, asked for {dims:?}", slice.dims())));
        }
        Ok(slice.to_dtype(DType::F64)?.to_device(device)?)
    }
}
