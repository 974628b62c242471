//! FID while training (`--eval-every`): samples with the EMA weights, decodes them, and
//! compares their Inception statistics with reference statistics, as the official
//! `--enable_eval` does.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::Args;
use maskdit::{MaskDit, ModelConfig};
use maskdit_eval::{FidInception, SetFeatures, Statistics};
use maskdit_pipeline::{Decoder, Pipeline};
use maskdit_registry::fetch::inception_weights;
use maskdit_registry::Registry;
use maskdit_sampler::{EdmOptions, Sampler};

use crate::runtime::progress::DownloadBar;

/// The VAE latent models are decoded with unless `--eval-vae` names another.
const DEFAULT_VAE: &str = "sd-vae-ft-mse";

/// Options of the evaluation during training.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Measure FID every K steps (and at the end of the run), sampling with the EMA weights;
    /// each result is a `{"step", "fid", …}` line in OUT/log.jsonl.
    #[arg(long)]
    eval_every: Option<u64>,
    /// Images per measurement: seeds 0..N, a class drawn from each seed (the same images'
    /// noise every time, so measurements compare).
    #[arg(long, default_value_t = 1000)]
    eval_num: usize,
    /// Reference statistics (.npz with mu and sigma: the official files, or `maskdit
    /// fid-stats` of real images).
    #[arg(long)]
    eval_ref: Option<PathBuf>,
    /// Guidance scale of the samples (1 = off).
    #[arg(long, default_value_t = 1.0, value_parser = crate::runtime::bounds::finite)]
    eval_cfg: f64,
    /// Noise levels of EDM's Heun sampler.
    #[arg(long, default_value_t = 40, value_parser = crate::runtime::bounds::sampler_steps)]
    eval_steps: usize,
    /// Images sampled at once.
    #[arg(long, default_value_t = 32, value_parser = crate::runtime::bounds::batch)]
    eval_batch: usize,
    /// VAE for latent models: registry name or weights file (default: sd-vae-ft-mse).
    #[arg(long)]
    eval_vae: Option<String>,
    /// FID Inception weights (default: the registry's inception-fid, from the cache).
    #[arg(long)]
    inception: Option<PathBuf>,
}

/// Everything a measurement needs, loaded before the first training step so that a bad path
/// fails at once.
pub struct Evaluator {
    every: u64,
    num: usize,
    cfg: f64,
    steps: usize,
    batch: usize,
    reference: Statistics,
    network: FidInception,
    decoder: Decoder,
}

/// One measurement.
pub struct Measurement {
    /// The Fréchet distance to the reference statistics.
    pub fid: f64,
    /// Images it took.
    pub images: usize,
    /// Seconds it took (sampling, decoding, Inception).
    pub seconds: f64,
}

impl Evaluator {
    /// The evaluator `args` ask for (none without `--eval-every`), for models of `config`.
    pub fn new(args: &EvalArgs, config: &ModelConfig, device: &Device) -> Result<Option<Self>> {
        let Some(every) = args.eval_every else { return Ok(None) };
        if every == 0 || args.eval_num < 2 || args.eval_batch == 0 || args.eval_steps < 2 {
            bail!("--eval-every, --eval-batch must be positive, --eval-num and --eval-steps at least 2");
        }
        if !(args.eval_cfg.is_finite() && args.eval_cfg >= 0.0) || (config.num_classes == 0 && args.eval_cfg != 1.0) {
            bail!("--eval-cfg must be a non-negative number, and 1 for a model without classes");
        }
        let path = args.eval_ref.as_ref().context(
            "--eval-every needs --eval-ref STATS.npz: the official reference statistics, or `maskdit fid-stats` of real images",
        )?;
        let reference = maskdit_eval::npz::EvaluationFile::read(path)?
            .statistics
            .with_context(|| format!("{} holds no mu and sigma", path.display()))?;
        if reference.mu.len() != maskdit_eval::FEATURE_DIMS {
            bail!(
                "{} holds {}-dimensional statistics; FID Inception statistics have {}",
                path.display(),
                reference.mu.len(),
                maskdit_eval::FEATURE_DIMS
            );
        }
        let weights = inception_weights(args.inception.as_deref())?;
        let network = FidInception::load(&weights, device)
            .with_context(|| format!("cannot load the FID Inception weights from {}", weights.display()))?;
        let pixels = matches!(config.in_channels, 1 | 3) && args.eval_vae.is_none();
        let decoder = if pixels {
            Decoder::Pixels
        } else {
            let name = args.eval_vae.as_deref().unwrap_or(DEFAULT_VAE);
            let vae =
                maskdit_pipeline::load_vae(&Registry::load()?, name, DType::F32, device, &mut DownloadBar::default())
                    .with_context(|| format!("cannot load the VAE {name}"))?;
            Decoder::Vae(vae.into())
        };
        Ok(Some(Self {
            every,
            num: args.eval_num,
            cfg: args.eval_cfg,
            steps: args.eval_steps,
            batch: args.eval_batch,
            reference,
            network,
            decoder,
        }))
    }

    /// Whether step `step` is measured.
    pub fn due(&self, step: u64, finished: bool) -> bool {
        step.is_multiple_of(self.every) || finished
    }

    /// Samples `--eval-num` images with `weights` (the EMA weights) and measures their FID.
    pub fn measure(
        &self,
        weights: HashMap<String, Tensor>,
        config: &ModelConfig,
        device: &Device,
    ) -> Result<Measurement> {
        let started = Instant::now();
        let model = MaskDit::new(config, candle_nn::VarBuilder::from_tensors(weights, DType::F32, device))?;
        let sampler = Sampler::Edm(EdmOptions::heun(self.steps));
        let pipeline = Pipeline::new(model, self.decoder.clone(), sampler).with_guidance(self.cfg, None)?;
        let mut features = SetFeatures::default();
        let seeds: Vec<u64> = (0..self.num as u64).collect();
        for chunk in seeds.chunks(self.batch) {
            // The images exactly as `generate` would write them.
            let images = pipeline
                .images(chunk, None, &mut |_| ControlFlow::Continue(()))?
                .iter()
                .map(maskdit_eval::image_tensor)
                .collect::<maskdit_eval::Result<Vec<Tensor>>>()?;
            self.network.extend(&mut features, &Tensor::cat(&images, 0)?)?;
        }
        let fid = features.statistics()?.frechet_distance(&self.reference)?;
        if !fid.is_finite() {
            bail!("the FID came out {fid}: the samples or the reference statistics hold non-finite values");
        }
        Ok(Measurement { fid, images: features.len(), seconds: started.elapsed().as_secs_f64() })
    }
}
