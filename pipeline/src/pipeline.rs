//! The sampling pipeline: seeds → noise → labels → guided sampler → decoder → finite check.

use candle_core::{DType, Device, Tensor};
use image::DynamicImage;
use maskdit::MaskDit;
use maskdit_sampler::{GuidanceInterval, Guided, OnStep, Sampler, SeededNoise};

use crate::{Decoder, Error, Result};

/// A model with its guidance, sampler and decoder: turns seeds (and classes) into images.
///
/// Each image depends on its seed, class and the settings only, never on the batch it was
/// drawn in: its initial noise, its drawn class and every later noise draw come from one
/// random stream seeded by its seed (in that order, so that giving a class leaves the noise
/// unchanged).
#[derive(Debug, Clone)]
pub struct Pipeline {
    model: MaskDit,
    decoder: Decoder,
    sampler: Sampler,
    guidance: f64,
    interval: Option<GuidanceInterval>,
    decode_batch: usize,
}

impl Pipeline {
    /// A pipeline without guidance (scale 1) that decodes one image per VAE call.
    pub fn new(model: MaskDit, decoder: Decoder, sampler: Sampler) -> Self {
        Self { model, decoder, sampler, guidance: 1.0, interval: None, decode_batch: 1 }
    }

    /// Classifier-free guidance at `scale` (1 = off), at every noise level or only those of
    /// `interval`. Refuses a negative or non-finite scale, and a scale other than 1 for a model
    /// without classes.
    pub fn with_guidance(mut self, scale: f64, interval: Option<GuidanceInterval>) -> Result<Self> {
        if !(scale.is_finite() && scale >= 0.0) {
            return Err(Error::Request(format!(
                "the guidance scale must be a non-negative number (1 = no guidance), got {scale}"
            )));
        }
        if self.model.config().num_classes == 0 && scale != 1.0 {
            return Err(Error::Request("guidance needs a class-conditional model; this one has no classes".into()));
        }
        (self.guidance, self.interval) = (scale, interval);
        Ok(self)
    }

    /// At most `images` images per VAE call (default 1): more costs memory, not time.
    pub fn with_decode_batch(mut self, images: usize) -> Self {
        self.decode_batch = images.max(1);
        self
    }

    /// The model.
    pub fn model(&self) -> &MaskDit {
        &self.model
    }

    /// The decoder.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// The sampler.
    pub fn sampler(&self) -> &Sampler {
        &self.sampler
    }

    /// The guidance scale (1 = off).
    pub fn guidance(&self) -> f64 {
        self.guidance
    }

    /// The side of the images, in pixels.
    pub fn image_side(&self) -> usize {
        self.model.config().input_size * self.decoder.upscale()
    }

    /// The model's samples `(N, C, H, W)` (f32; latents for latent models) for `seeds`, one
    /// each. `classes` gives each image's class (as many as seeds); without it each image's
    /// class is drawn from its seed (models without classes take none). `on_step` sees every
    /// sampler step and may stop the run ([`maskdit_sampler::Error::Stopped`]).
    pub fn sample(&self, seeds: &[u64], classes: Option<&[usize]>, on_step: &mut OnStep<'_>) -> Result<Tensor> {
        let config = self.model.config();
        if seeds.is_empty() {
            return Err(Error::Request("no seeds to sample".into()));
        }
        if let Some(classes) = classes {
            if config.num_classes == 0 {
                return Err(Error::Request("classes given, but the model has no classes".into()));
            }
            if classes.len() != seeds.len() {
                return Err(Error::Request(format!("{} classes for {} seeds", classes.len(), seeds.len())));
            }
            if let Some(&bad) = classes.iter().find(|&&c| c >= config.num_classes) {
                return Err(Error::Request(format!("class {bad}: the model has classes 0..{}", config.num_classes)));
            }
        }
        let device = self.model.device();
        let mut noise = SeededNoise::new(seeds);
        let latents = noise.latents(&[config.in_channels, config.input_size, config.input_size], device)?;
        let labels = if config.num_classes > 0 {
            // Drawn even when given, so that every image's later noise is the same either way.
            let drawn = noise.class_indices(config.num_classes);
            Some(maskdit::one_hot(classes.map_or(drawn, <[usize]>::to_vec), config.num_classes, device)?)
        } else {
            None
        };
        let guided = Guided::new(&self.model, self.guidance).with_interval(self.interval);
        let samples = self.sampler.sample(&guided, &latents, labels.as_ref(), &mut noise, on_step)?;
        self.check_finite(&samples, "samples", seeds)?;
        Ok(samples)
    }

    /// Pixels `(N, C, H, W)` in `[-1, 1]` of the samples of `seeds` ([`Self::sample`]).
    pub fn decode(&self, samples: &Tensor, seeds: &[u64]) -> Result<Tensor> {
        let pixels = self.decoder.decode(samples, self.decode_batch)?;
        if matches!(self.decoder, Decoder::Vae(_)) {
            self.check_finite(&pixels, "decoded pixels", seeds)?;
        }
        Ok(pixels)
    }

    /// 8-bit images of `seeds` (grey or RGB as the model's channels say), in seed order:
    /// [`Self::sample`], then [`Self::decode`].
    pub fn images(
        &self,
        seeds: &[u64],
        classes: Option<&[usize]>,
        on_step: &mut OnStep<'_>,
    ) -> Result<Vec<DynamicImage>> {
        let samples = self.sample(seeds, classes, on_step)?;
        let pixels = self.decode(&samples, seeds)?;
        Ok(maskdit_vae::image::to_images(&pixels)?)
    }

    fn check_finite(&self, values: &Tensor, stage: &'static str, seeds: &[u64]) -> Result<()> {
        // 0·x is 0 for every finite x and NaN for NaN and ±∞.
        let probe = (values * 0.0)?.sum_all()?.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
        if probe.to_scalar::<f32>()?.is_finite() {
            return Ok(());
        }
        let (first, last) = (seeds[0], seeds[seeds.len() - 1]);
        Err(Error::NonFinite { stage, first, last, guidance: self.guidance })
    }
}
