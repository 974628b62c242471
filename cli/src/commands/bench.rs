//! `maskdit bench`: timings of the forward passes, a training step and a sampling step.

use std::ops::ControlFlow;
use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use clap::Args;
use maskdit::flops::{forward_flops, train_step_flops};
use maskdit::mask::kept_tokens;
use maskdit::{Mask, MaskDit, ModelConfig};
use maskdit_pipeline::{Decoder, Pipeline};
use maskdit_sampler::{Denoiser, EdmOptions, Guided, Sampler};
use maskdit_train::{AdamW, AdamWConfig, EdmLoss, Precision, TrainableModel};
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

use crate::runtime::device::{peak_device_mib, DTypeChoice, DeviceChoice};

/// Options of `maskdit bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Architecture preset (with the official 512×8 decoder).
    #[arg(long, default_value = "DiT-B/2", value_parser = clap::builder::PossibleValuesParser::new(ModelConfig::PRESETS))]
    model: String,
    /// Images per call.
    #[arg(long, default_value_t = 4, value_parser = crate::runtime::bounds::batch)]
    batch: usize,
    /// Latent side (32 for 256 px).
    #[arg(long, default_value_t = 32, value_parser = crate::runtime::bounds::latent_size)]
    latent_size: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// Number format (training: f32, or bf16 mixed precision on f32 master weights).
    #[arg(long, value_enum, default_value_t = DTypeChoice::F32)]
    dtype: DTypeChoice,
    /// Timed repeats after one warm-up (the median is reported).
    #[arg(long, default_value_t = 3, value_parser = crate::runtime::bounds::iters)]
    iters: usize,
    /// Let f32 matrix products on CUDA use TF32 tensor cores (candle's reduced-precision f32
    /// GEMM, as PyTorch's `allow_tf32`).
    #[arg(long)]
    tf32: bool,
    /// FID Inception weights for `--only inception` (default: the registry's inception-fid,
    /// from the cache).
    #[arg(long)]
    inception: Option<std::path::PathBuf>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Only these measurements (repeatable; default: all but `sample`).
    #[arg(long, value_enum)]
    only: Vec<Measurement>,
}

/// What `maskdit bench` can time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Measurement {
    /// A 2048³ matrix product: the practical FLOP ceiling of the device.
    Gemm,
    /// One forward pass.
    Forward,
    /// One guided forward pass (both halves batched).
    #[value(name = "forward_cfg")]
    ForwardCfg,
    /// One training step (loss, backward, AdamW), masked (ratio 0.5) and unmasked.
    #[value(name = "train_step")]
    TrainStep,
    /// One guided Heun step and the final Euler step of sampling.
    #[value(name = "sample_step")]
    SampleStep,
    /// A whole sampling run: 40 EDM Heun levels at guidance 1.5 (79 guided evaluations), then
    /// the VAE decode to pixels (fresh SD VAE weights), each timed, with images per second.
    Sample,
    /// The FID Inception-v3 on `--batch` random 256-px images (resize, network, features), as
    /// images per second; needs --inception or the cached inception-fid.
    Inception,
}

/// Noise levels of the sampling run timed by [`Measurement::Sample`] (the paper's EDM setting).
const SAMPLE_LEVELS: usize = 40;
/// Images per VAE decode call in [`Measurement::Sample`]: candle's convolutions unfold their
/// input (im2col), about 0.3 GB per 256-px image in f32, so larger calls only cost memory.
const DECODE_BATCH: usize = 8;

/// Peak resident memory of this process, in MB.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn median_seconds(iters: usize, device: &Device, mut f: impl FnMut() -> Result<()>) -> Result<(f64, Vec<f64>)> {
    f()?;
    device.synchronize()?;
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let start = Instant::now();
        f()?;
        device.synchronize()?;
        times.push(start.elapsed().as_secs_f64());
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    Ok((sorted[sorted.len() / 2], times))
}

struct Row {
    what: &'static str,
    mask_ratio: Option<f64>,
    seconds: f64,
    spread: Vec<f64>,
    flops: f64,
    /// Images per second, for the rows of a whole sampling run.
    images_per_second: Option<f64>,
    /// The most memory the CUDA device's pool held during the measurement, in MiB.
    peak_device_mib: Option<f64>,
}

/// Runs `measure` with the device pool's peak counted from it alone (the memory an earlier
/// measurement left in the pool is handed back first) and records that peak in its rows.
fn with_peak_memory(device: &Device, measure: impl FnOnce() -> Result<Vec<Row>>) -> Result<Vec<Row>> {
    maskdit_kernels::memory_pool::release_unused(device)?;
    maskdit_kernels::memory_pool::reset_peak_memory(device)?;
    let mut rows = measure()?;
    device.synchronize()?;
    let peak = peak_device_mib(device)?;
    for row in &mut rows {
        row.peak_device_mib = peak;
    }
    Ok(rows)
}

/// The model and inputs every measurement shares.
struct Workload {
    config: ModelConfig,
    trainable: TrainableModel,
    inference: MaskDit,
    x: Tensor,
    sigma: Tensor,
    labels: Tensor,
    device: Device,
    dtype: DType,
}

impl Workload {
    fn new(args: &BenchArgs) -> Result<Self> {
        let device = args.device.open()?;
        let dtype = args.dtype.dtype();
        let config = ModelConfig::preset(&args.model, args.latent_size, 4, 1000, true)?;
        let trainable = TrainableModel::fresh(&config, &mut ChaCha12Rng::seed_from_u64(0), &device)?;
        // Inference on detached views of the weights (no copy): a network built on the
        // variables themselves would record a gradient graph and keep every activation alive.
        let detached = trainable.all_params().into_iter().map(|(name, var)| (name, var.as_tensor().detach())).collect();
        let inference = MaskDit::new(&config, candle_nn::VarBuilder::from_tensors(detached, dtype, &device))?;
        let (n, s) = (args.batch, config.input_size);
        let x = Tensor::randn(0f32, 1.0, (n, 4, s, s), &device)?;
        let sigma = Tensor::full(2.0f32, n, &device)?;
        let labels = maskdit::one_hot((0..n).map(|i| (i * 37) % 1000), 1000, &device)?;
        Ok(Self { config, trainable, inference, x, sigma, labels, device, dtype })
    }

    fn batch(&self) -> usize {
        self.x.dims()[0]
    }

    fn tokens(&self) -> usize {
        self.config.num_patches()
    }

    fn gemm(&self, iters: usize) -> Result<Row> {
        const SIDE: usize = 2048;
        let a = Tensor::randn(0f32, 1.0, (SIDE, SIDE), &self.device)?.to_dtype(self.dtype)?;
        let b = Tensor::randn(0f32, 1.0, (SIDE, SIDE), &self.device)?.to_dtype(self.dtype)?;
        let (t, spread) = median_seconds(iters, &self.device, || Ok(a.matmul(&b).map(drop)?))?;
        Ok(Row {
            what: "gemm",
            mask_ratio: None,
            seconds: t,
            spread,
            flops: 2.0 * (SIDE as f64).powi(3),
            images_per_second: None,
            peak_device_mib: None,
        })
    }

    fn forward(&self, iters: usize, scale: f64) -> Result<Row> {
        let guided = Guided::new(&self.inference, scale);
        let (t, spread) = median_seconds(iters, &self.device, || {
            Ok(guided.denoise(&self.x, &self.sigma, Some(&self.labels)).map(drop)?)
        })?;
        let (what, evaluated) =
            if scale == 1.0 { ("forward", self.batch()) } else { ("forward_cfg", 2 * self.batch()) };
        Ok(Row {
            what,
            mask_ratio: None,
            seconds: t,
            spread,
            flops: forward_flops(&self.config, evaluated, self.tokens()),
            images_per_second: None,
            peak_device_mib: None,
        })
    }

    fn train_step(&self, iters: usize, ratio: f64) -> Result<Row> {
        let precision = if self.dtype == DType::F32 { Precision::F32 } else { Precision::Bf16 };
        let mut opt = AdamW::new(self.trainable.trainable_params(), AdamWConfig::default())?;
        let loss = EdmLoss::new(self.config.mae_loss_coef);
        let mut rng = ChaCha12Rng::seed_from_u64(1);
        let (n, l) = (self.batch(), self.tokens());
        let (t, spread) = median_seconds(iters, &self.device, || {
            let mask = (ratio > 0.0).then(|| Mask::random(n, l, ratio, &mut rng, &self.device)).transpose()?;
            let rnd = Tensor::randn(0f32, 1.0, n, &self.device)?;
            let noise = self.x.randn_like(0.0, 1.0)?;
            let network = self.trainable.compute_model(precision.compute_dtype())?;
            let per_sample = loss.per_sample(&network, &self.x, Some(&self.labels), &rnd, &noise, mask.as_ref())?;
            opt.step(&per_sample.mean_all()?.backward()?)?;
            Ok(())
        })?;
        let flops = train_step_flops(&self.config, n, kept_tokens(l, ratio));
        Ok(Row {
            what: "train_step",
            mask_ratio: Some(ratio),
            seconds: t,
            spread,
            flops,
            images_per_second: None,
            peak_device_mib: None,
        })
    }

    /// The pipeline of the sampling measurements: guidance 1.5, EDM Heun over `levels` noise
    /// levels from σ = 80, decoding with `decoder`.
    fn pipeline(&self, levels: usize, decoder: Decoder) -> Result<Pipeline> {
        let mut options = EdmOptions::heun(levels);
        options.sigma_max = Some(80.0);
        let pipeline = Pipeline::new(self.inference.clone(), decoder, Sampler::Edm(options));
        Ok(pipeline.with_guidance(1.5, None)?.with_decode_batch(DECODE_BATCH))
    }

    /// Seeds `0..batch` and their classes, as the other measurements label their batch.
    fn seeds_and_classes(&self) -> (Vec<u64>, Vec<usize>) {
        let n = self.batch();
        ((0..n as u64).collect(), (0..n).map(|i| (i * 37) % 1000).collect())
    }

    fn sample_step(&self, iters: usize) -> Result<Row> {
        // Two noise levels: one full Heun step (two guided evaluations) and the final Euler step.
        let pipeline = self.pipeline(2, Decoder::Pixels)?;
        let (seeds, classes) = self.seeds_and_classes();
        let (t, spread) = median_seconds(iters, &self.device, || {
            pipeline.sample(&seeds, Some(&classes), &mut |_| ControlFlow::Continue(()))?;
            Ok(())
        })?;
        let flops = 3.0 * forward_flops(&self.config, 2 * self.batch(), self.tokens());
        Ok(Row {
            what: "sample_step",
            mask_ratio: None,
            seconds: t,
            spread,
            flops,
            images_per_second: None,
            peak_device_mib: None,
        })
    }

    /// Times whole sampling runs ([`Measurement::Sample`]): the denoising and the decode, each
    /// after a warm-up (a two-level run and one decode), and both together as images per second.
    fn sample(&self, iters: usize) -> Result<Vec<Row>> {
        let (seeds, classes) = self.seeds_and_classes();
        let vae = {
            // Fresh weights come as variables; decoding with those would record a gradient
            // graph and keep every activation alive, so the decoder is rebuilt on detached copies.
            let varmap = candle_nn::VarMap::new();
            let vb = candle_nn::VarBuilder::from_varmap(&varmap, self.dtype, &self.device);
            maskdit_vae::Autoencoder::new(maskdit_vae::VaeConfig::default(), vb)?;
            let detached = varmap
                .data()
                .lock()
                .map_err(|_| anyhow::anyhow!("the VAE's fresh weights are unreadable"))?
                .iter()
                .map(|(name, var)| (name.clone(), var.as_tensor().detach()))
                .collect();
            maskdit_vae::Autoencoder::from_tensors(
                detached,
                maskdit_vae::VaeConfig::default(),
                self.dtype,
                &self.device,
            )?
        };
        let decoder = Decoder::Vae(std::sync::Arc::new(vae));
        let (warm_up, timed) = (self.pipeline(2, decoder.clone())?, self.pipeline(SAMPLE_LEVELS, decoder)?);
        let keep_going = &mut |_: &maskdit_sampler::Step<'_>| ControlFlow::Continue(());
        let n = self.batch();
        let latents = warm_up.sample(&seeds, Some(&classes), keep_going)?;
        warm_up.decode(&latents, &seeds)?;
        self.device.synchronize()?;
        let (mut denoise, mut decode) = (Vec::with_capacity(iters), Vec::with_capacity(iters));
        for _ in 0..iters {
            let start = Instant::now();
            let latents = timed.sample(&seeds, Some(&classes), keep_going)?;
            self.device.synchronize()?;
            denoise.push(start.elapsed().as_secs_f64());
            let start = Instant::now();
            timed.decode(&latents, &seeds)?;
            self.device.synchronize()?;
            decode.push(start.elapsed().as_secs_f64());
        }
        let median = |times: &[f64]| {
            let mut sorted = times.to_vec();
            sorted.sort_by(f64::total_cmp);
            sorted[sorted.len() / 2]
        };
        let (t_denoise, t_decode) = (median(&denoise), median(&decode));
        let evaluations = (2 * SAMPLE_LEVELS - 1) as f64;
        let flops = evaluations * forward_flops(&self.config, 2 * n, self.tokens());
        let per_second = Some(n as f64 / (t_denoise + t_decode));
        Ok(vec![
            Row {
                what: "sample",
                mask_ratio: None,
                seconds: t_denoise,
                spread: denoise,
                flops,
                images_per_second: per_second,
                peak_device_mib: None,
            },
            Row {
                what: "vae_decode",
                mask_ratio: None,
                seconds: t_decode,
                spread: decode,
                flops: 0.0,
                images_per_second: per_second,
                peak_device_mib: None,
            },
        ])
    }
}

/// Times [`Measurement::Inception`]: `--batch` random 256-px images through the resize, the
/// network and the feature copy-out.
fn inception(args: &BenchArgs) -> Result<Row> {
    const SIDE: usize = 256;
    let path = maskdit_registry::fetch::inception_weights(args.inception.as_deref())?;
    let device = args.device.open()?;
    let network = maskdit_eval::FidInception::load(&path, &device)?;
    let pixels = Tensor::rand(0f32, 255.0, (args.batch, 3, SIDE, SIDE), &device)?.to_dtype(DType::U8)?;
    let (t, spread) = median_seconds(args.iters, &device, || {
        let mut features = maskdit_eval::SetFeatures::default();
        Ok(network.extend(&mut features, &pixels)?)
    })?;
    Ok(Row {
        what: "inception",
        mask_ratio: None,
        seconds: t,
        spread,
        flops: 0.0,
        images_per_second: Some(args.batch as f64 / t),
        peak_device_mib: None,
    })
}

/// Prints the rows as a table or as JSON lines.
fn report(args: &BenchArgs, rows: &[Row]) {
    let rss = peak_rss_mb();
    let (n, s) = (args.batch, args.latent_size);
    if args.json {
        for r in rows {
            let mut line = serde_json::json!({"what": r.what, "seconds": r.seconds, "gflops": r.flops / 1e9,
                "peak_rss_mb": rss, "model": args.model, "batch": n, "device": args.device.to_string(),
                "dtype": args.dtype.to_string(), "runs": r.spread,
                "cuda_kernels": maskdit_kernels::Backend::cuda_kernels_enabled()});
            if let Some(peak) = r.peak_device_mib {
                line["peak_device_mib"] = serde_json::json!(peak);
            }
            if let Some(m) = r.mask_ratio {
                line["mask_ratio"] = serde_json::json!(m);
            }
            if let Some(rate) = r.images_per_second {
                line["images_per_second"] = serde_json::json!(rate);
            }
            if args.tf32 {
                line["tf32"] = serde_json::json!(true);
            }
            println!("{line}");
        }
        return;
    }
    let tf32 = if args.tf32 { " (TF32)" } else { "" };
    println!(
        "{} batch {n}, latent {s}x{s}, {} {}{tf32}, median of {}",
        args.model, args.device, args.dtype, args.iters
    );
    println!("{:<12} {:>6} {:>10} {:>10} {:>10}  runs", "what", "mask", "seconds", "GFLOP", "GFLOP/s");
    for r in rows {
        let mask = r.mask_ratio.map_or("-".to_string(), |m| format!("{m}"));
        let runs: Vec<String> = r.spread.iter().map(|t| format!("{t:.2}")).collect();
        let (gflop, rate) = (r.flops / 1e9, r.flops / 1e9 / r.seconds);
        println!("{:<12} {mask:>6} {:>10.3} {gflop:>10.1} {rate:>10.1}  {}", r.what, r.seconds, runs.join(" "));
        if let Some(peak) = r.peak_device_mib {
            println!("{:<12} peak device memory {peak:.0} MiB", "");
        }
    }
    // The sample and decode rows share one rate (both together).
    for r in rows.iter().filter(|r| r.what != "vae_decode") {
        if let Some(rate) = r.images_per_second {
            let what = if r.what == "sample" { "sampling with decode" } else { r.what };
            println!("{what}: {rate:.2} images/s");
        }
    }
    println!("peak RSS {rss:.0} MB");
}

/// Runs `maskdit bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    if args.batch == 0 || args.iters == 0 {
        bail!("--batch and --iters must be positive");
    }
    if args.tf32 {
        if args.device == DeviceChoice::Cpu {
            bail!("--tf32 applies to CUDA devices only; drop it, or use --device cuda");
        }
        candle_core::cuda::set_gemm_reduced_precision_f32(true);
    }
    let mut rows = Vec::new();
    // The Inception alone needs no diffusion model: only when asked for.
    if args.only.contains(&Measurement::Inception) {
        rows.push(inception(&args)?);
        if args.only.iter().all(|m| *m == Measurement::Inception) {
            report(&args, &rows);
            return Ok(());
        }
    }
    let work = Workload::new(&args)?;
    let wanted = |m: Measurement| args.only.is_empty() || args.only.contains(&m);
    let device = &work.device;
    if wanted(Measurement::Gemm) {
        rows.extend(with_peak_memory(device, || Ok(vec![work.gemm(args.iters)?]))?);
    }
    if wanted(Measurement::Forward) {
        rows.extend(with_peak_memory(device, || Ok(vec![work.forward(args.iters, 1.0)?]))?);
    }
    if wanted(Measurement::ForwardCfg) {
        rows.extend(with_peak_memory(device, || Ok(vec![work.forward(args.iters, 1.5)?]))?);
    }
    if wanted(Measurement::TrainStep) {
        rows.extend(with_peak_memory(device, || Ok(vec![work.train_step(args.iters, 0.5)?]))?);
        rows.extend(with_peak_memory(device, || Ok(vec![work.train_step(args.iters, 0.0)?]))?);
    }
    if wanted(Measurement::SampleStep) {
        rows.extend(with_peak_memory(device, || Ok(vec![work.sample_step(args.iters)?]))?);
    }
    // A whole sampling run takes minutes on the CPU: only when asked for.
    if args.only.contains(&Measurement::Sample) {
        rows.extend(with_peak_memory(device, || work.sample(args.iters))?);
    }
    report(&args, &rows);
    Ok(())
}
