//! `maskdit bench`: timings of the forward passes, a training step and a sampling step.

use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use clap::Args;
use maskdit::flops::{forward_flops, train_step_flops};
use maskdit::mask::kept_tokens;
use maskdit::train::{AdamW, AdamWConfig, EdmLoss, Precision, TrainableModel};
use maskdit::{Mask, ModelConfig};
use maskdit_sampler::{Denoiser, EdmOptions, Guided, SeededNoise};
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

use crate::device::{parse_device, parse_dtype};

/// Options of `maskdit bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Architecture preset, e.g. DiT-B/2 or DiT-XL/2 (with the official 512×8 decoder).
    #[arg(long, default_value = "DiT-B/2")]
    model: String,
    /// Images per call.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Latent side (32 for 256 px).
    #[arg(long, default_value_t = 32)]
    latent_size: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// f32, f16 or bf16 (training: f32, or bf16 mixed precision on f32 master weights).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Timed repeats after one warm-up (the median is reported).
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Only these measurements (gemm, forward, forward_cfg, train_step, sample_step); gemm is
    /// a 2048³ matrix product, the practical FLOP ceiling of the device.
    #[arg(long)]
    only: Vec<String>,
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

/// Runs `maskdit bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    if args.batch == 0 || args.iters == 0 {
        bail!("--batch and --iters must be positive");
    }
    let device = parse_device(&args.device)?;
    let dtype = parse_dtype(&args.dtype)?;
    let config = ModelConfig::preset(&args.model, args.latent_size, 4, 1000, true)?;
    let mut rng = ChaCha12Rng::seed_from_u64(0);
    let trainable = TrainableModel::fresh(&config, &mut rng, &device)?;
    let inference = if dtype == DType::F32 {
        trainable.model().clone()
    } else {
        let weights = trainable.weights()?;
        maskdit::MaskDit::new(&config, candle_nn::VarBuilder::from_tensors(weights, dtype, &device))?
    };
    let n = args.batch;
    let s = config.input_size;
    let x = Tensor::randn(0f32, 1.0, (n, 4, s, s), &device)?;
    let sigma = Tensor::full(2.0f32, n, &device)?;
    let rows_onehot: Vec<f32> =
        (0..n).flat_map(|i| (0..1000).map(move |j| if j == (i * 37) % 1000 { 1.0 } else { 0.0 })).collect();
    let labels = Tensor::from_vec(rows_onehot, (n, 1000), &device)?;
    let l = config.num_patches();
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let mut rows = Vec::new();

    if wanted("gemm") {
        const SIDE: usize = 2048;
        let a = Tensor::randn(0f32, 1.0, (SIDE, SIDE), &device)?.to_dtype(dtype)?;
        let b = Tensor::randn(0f32, 1.0, (SIDE, SIDE), &device)?.to_dtype(dtype)?;
        let (t, spread) = median_seconds(args.iters, &device, || Ok(a.matmul(&b).map(drop)?))?;
        rows.push(Row { what: "gemm", mask_ratio: None, seconds: t, spread, flops: 2.0 * (SIDE as f64).powi(3) });
    }
    if wanted("forward") {
        let (t, spread) =
            median_seconds(args.iters, &device, || Ok(inference.denoise(&x, &sigma, Some(&labels)).map(drop)?))?;
        rows.push(Row { what: "forward", mask_ratio: None, seconds: t, spread, flops: forward_flops(&config, n, l) });
    }
    let guided = Guided::new(&inference, 1.5);
    if wanted("forward_cfg") {
        let (t, spread) =
            median_seconds(args.iters, &device, || Ok(guided.denoise(&x, &sigma, Some(&labels)).map(drop)?))?;
        rows.push(Row {
            what: "forward_cfg",
            mask_ratio: None,
            seconds: t,
            spread,
            flops: forward_flops(&config, 2 * n, l),
        });
    }
    if wanted("train_step") {
        let precision = if dtype == DType::F32 { Precision::F32 } else { Precision::Bf16 };
        let mut opt = AdamW::new(trainable.trainable_params(), AdamWConfig::default())?;
        let loss = EdmLoss::new(config.mae_loss_coef);
        for ratio in [0.5, 0.0] {
            let kept = kept_tokens(l, ratio);
            let (t, spread) = median_seconds(args.iters, &device, || {
                let mask = (ratio > 0.0).then(|| Mask::random(n, l, ratio, &mut rng, &device)).transpose()?;
                let rnd = Tensor::randn(0f32, 1.0, n, &device)?;
                let noise = Tensor::randn(0f32, 1.0, (n, 4, s, s), &device)?;
                let network = trainable.compute_model(precision.compute_dtype())?;
                let per_sample = loss.per_sample(&network, &x, Some(&labels), &rnd, &noise, mask.as_ref())?;
                opt.step(&per_sample.mean_all()?.backward()?)?;
                Ok(())
            })?;
            rows.push(Row {
                what: "train_step",
                mask_ratio: Some(ratio),
                seconds: t,
                spread,
                flops: train_step_flops(&config, n, kept),
            });
        }
    }
    if wanted("sample_step") {
        let seeds: Vec<u64> = (0..n as u64).collect();
        let (t, spread) = median_seconds(args.iters, &device, || {
            let mut noise = SeededNoise::new(&seeds);
            // Two noise levels: one full Heun step (two guided evaluations) and the final Euler step.
            let mut options = EdmOptions::heun(2);
            options.sigma_max = Some(80.0);
            let _ = options.sample(&guided, &x, Some(&labels), &mut noise, &mut |_| {})?;
            Ok(())
        })?;
        rows.push(Row {
            what: "sample_step",
            mask_ratio: None,
            seconds: t,
            spread,
            flops: 3.0 * forward_flops(&config, 2 * n, l),
        });
    }
    let rss = peak_rss_mb();
    if args.json {
        for r in &rows {
            let mut line = serde_json::json!({"what": r.what, "seconds": r.seconds, "gflops": r.flops / 1e9,
                "peak_rss_mb": rss, "model": args.model, "batch": n, "device": args.device, "dtype": args.dtype,
                "runs": r.spread});
            if let Some(m) = r.mask_ratio {
                line["mask_ratio"] = serde_json::json!(m);
            }
            println!("{line}");
        }
    } else {
        println!("{} batch {n}, latent {s}x{s}, {} {}, median of {}", args.model, args.device, args.dtype, args.iters);
        println!("{:<12} {:>6} {:>10} {:>10} {:>10}  runs", "what", "mask", "seconds", "GFLOP", "GFLOP/s");
        for r in &rows {
            let mask = r.mask_ratio.map_or("-".to_string(), |m| format!("{m}"));
            let runs: Vec<String> = r.spread.iter().map(|t| format!("{t:.2}")).collect();
            println!(
                "{:<12} {:>6} {:>10.3} {:>10.1} {:>10.1}  {}",
                r.what,
                mask,
                r.seconds,
                r.flops / 1e9,
                r.flops / 1e9 / r.seconds,
                runs.join(" ")
            );
        }
        println!("peak RSS {rss:.0} MB");
    }
    Ok(())
}
