//! `maskdit bench`: timings of the forward passes, a training step and a sampling step.

use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use clap::Args;
use maskdit::flops::{forward_flops, train_step_flops};
use maskdit::mask::kept_tokens;
use maskdit::{Mask, MaskDit, ModelConfig};
use maskdit_sampler::{Denoiser, EdmOptions, Guided, SeededNoise};
use maskdit_train::{AdamW, AdamWConfig, EdmLoss, Precision, TrainableModel};
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

use crate::device::{DTypeChoice, DeviceChoice};

/// Options of `maskdit bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Architecture preset (with the official 512×8 decoder).
    #[arg(long, default_value = "DiT-B/2", value_parser = clap::builder::PossibleValuesParser::new(ModelConfig::PRESETS))]
    model: String,
    /// Images per call.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Latent side (32 for 256 px).
    #[arg(long, default_value_t = 32)]
    latent_size: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// Number format (training: f32, or bf16 mixed precision on f32 master weights).
    #[arg(long, value_enum, default_value_t = DTypeChoice::F32)]
    dtype: DTypeChoice,
    /// Timed repeats after one warm-up (the median is reported).
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Only these measurements (repeatable; default: all).
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
}

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
        Ok(Row { what: "gemm", mask_ratio: None, seconds: t, spread, flops: 2.0 * (SIDE as f64).powi(3) })
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
        Ok(Row { what: "train_step", mask_ratio: Some(ratio), seconds: t, spread, flops })
    }

    fn sample_step(&self, iters: usize) -> Result<Row> {
        let guided = Guided::new(&self.inference, 1.5);
        let seeds: Vec<u64> = (0..self.batch() as u64).collect();
        let (t, spread) = median_seconds(iters, &self.device, || {
            let mut noise = SeededNoise::new(&seeds);
            // Two noise levels: one full Heun step (two guided evaluations) and the final Euler step.
            let mut options = EdmOptions::heun(2);
            options.sigma_max = Some(80.0);
            options.sample(&guided, &self.x, Some(&self.labels), &mut noise, &mut |_| {})?;
            Ok(())
        })?;
        let flops = 3.0 * forward_flops(&self.config, 2 * self.batch(), self.tokens());
        Ok(Row { what: "sample_step", mask_ratio: None, seconds: t, spread, flops })
    }
}

/// Prints the rows as a table or as JSON lines.
fn report(args: &BenchArgs, rows: &[Row]) {
    let rss = peak_rss_mb();
    let (n, s) = (args.batch, args.latent_size);
    if args.json {
        for r in rows {
            let mut line = serde_json::json!({"what": r.what, "seconds": r.seconds, "gflops": r.flops / 1e9,
                "peak_rss_mb": rss, "model": args.model, "batch": n, "device": args.device.to_string(),
                "dtype": args.dtype.to_string(), "runs": r.spread});
            if let Some(m) = r.mask_ratio {
                line["mask_ratio"] = serde_json::json!(m);
            }
            println!("{line}");
        }
        return;
    }
    println!("{} batch {n}, latent {s}x{s}, {} {}, median of {}", args.model, args.device, args.dtype, args.iters);
    println!("{:<12} {:>6} {:>10} {:>10} {:>10}  runs", "what", "mask", "seconds", "GFLOP", "GFLOP/s");
    for r in rows {
        let mask = r.mask_ratio.map_or("-".to_string(), |m| format!("{m}"));
        let runs: Vec<String> = r.spread.iter().map(|t| format!("{t:.2}")).collect();
        let (gflop, rate) = (r.flops / 1e9, r.flops / 1e9 / r.seconds);
        println!("{:<12} {mask:>6} {:>10.3} {gflop:>10.1} {rate:>10.1}  {}", r.what, r.seconds, runs.join(" "));
    }
    println!("peak RSS {rss:.0} MB");
}

/// Runs `maskdit bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    if args.batch == 0 || args.iters == 0 {
        bail!("--batch and --iters must be positive");
    }
    let work = Workload::new(&args)?;
    let wanted = |m: Measurement| args.only.is_empty() || args.only.contains(&m);
    let mut rows = Vec::new();
    if wanted(Measurement::Gemm) {
        rows.push(work.gemm(args.iters)?);
    }
    if wanted(Measurement::Forward) {
        rows.push(work.forward(args.iters, 1.0)?);
    }
    if wanted(Measurement::ForwardCfg) {
        rows.push(work.forward(args.iters, 1.5)?);
    }
    if wanted(Measurement::TrainStep) {
        rows.push(work.train_step(args.iters, 0.5)?);
        rows.push(work.train_step(args.iters, 0.0)?);
    }
    if wanted(Measurement::SampleStep) {
        rows.push(work.sample_step(args.iters)?);
    }
    report(&args, &rows);
    Ok(())
}
