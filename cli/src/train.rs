//! `maskdit train` and `maskdit finetune`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use clap::Args;
use maskdit::{checkpoint, ModelConfig, WeightSet};
use maskdit_train::data::{Dataset, LmdbDataset, ShardDataset};
use maskdit_train::{preset, Precision, Start, TrainOptions, TrainPreset, TrainableModel, Trainer, PRESET_NAMES};

use crate::device::DeviceChoice;
use crate::progress;

/// Options shared by `train` and `finetune`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Recipe: imagenet256-pretrain, imagenet256-finetune, imagenet512-pretrain,
    /// imagenet512-finetune, mnist-pretrain or mnist-finetune.
    #[arg(long)]
    preset: String,
    /// Training data: safetensors shards (files or folders of them, from `maskdit encode`
    /// or with `images` + `labels`), or an official latent LMDB folder.
    #[arg(long, required = true, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Architecture as JSON (the official field names, e.g. a golden `config.json`), replacing
    /// the preset's.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run folder: checkpoints go to OUT/checkpoints, the log to OUT/log.jsonl.
    #[arg(long)]
    out: PathBuf,
    /// Continue from the latest checkpoint in OUT.
    #[arg(long)]
    resume: bool,
    /// Total steps of the run (default: the preset's).
    #[arg(long)]
    steps: Option<u64>,
    /// Examples per step (default: the preset's).
    #[arg(long)]
    batch: Option<usize>,
    /// Micro-batches per step (gradient accumulation).
    #[arg(long)]
    grad_accum: Option<usize>,
    /// Learning rate (default: the preset's).
    #[arg(long)]
    lr: Option<f64>,
    /// Seed of all training randomness.
    #[arg(long)]
    seed: Option<u64>,
    /// Steps between checkpoints (default: the preset's).
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Use the flipped copies of an official LMDB / flip examples at random.
    #[arg(long)]
    xflip: bool,
    /// Also write the final EMA weights, with their architecture, to this file.
    #[arg(long)]
    export: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// Arithmetic of the passes: f32, or bf16 (mixed precision: bf16 forward and backward on
    /// f32 master weights; meant for CUDA, slow on the CPU).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    precision: Precision,
}

/// Options of `finetune`: the starting checkpoint, then those of `train`.
#[derive(Debug, Args)]
pub struct FinetuneArgs {
    /// Starting checkpoint: an official .pt (model + ema; optimiser state not needed) or a
    /// toolkit checkpoint.
    #[arg(long)]
    pub from: PathBuf,
    /// Refuse checkpoint keys that do not fit the model instead of skipping them.
    #[arg(long)]
    pub strict: bool,
    /// The run.
    #[command(flatten)]
    pub train: TrainArgs,
}

/// Reads the data given on the command line.
fn open_data(paths: &[PathBuf], channels: usize, size: usize, xflip: bool) -> Result<Box<dyn Dataset>> {
    if let [dir] = paths {
        if dir.join("data.mdb").exists() {
            let ds = LmdbDataset::open(dir, channels, size, xflip, maskdit_vae::SD_SCALE_FACTOR)?;
            return Ok(Box::new(ds));
        }
    }
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
                .collect();
            found.sort();
            if found.is_empty() {
                bail!("{} holds no .safetensors shards and no LMDB (data.mdb)", path.display());
            }
            files.extend(found);
        } else if path.exists() {
            files.push(path.clone());
        } else {
            bail!("data {} does not exist", path.display());
        }
    }
    Ok(Box::new(ShardDataset::open(&files, maskdit_vae::SD_SCALE_FACTOR)?))
}

fn latest_checkpoint(dir: &Path) -> Result<Option<PathBuf>> {
    if !dir.exists() {
        return Ok(None);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "safetensors")
                && p.file_stem().is_some_and(|s| s.to_string_lossy().chars().all(|c| c.is_ascii_digit()))
        })
        .collect();
    found.sort();
    Ok(found.pop())
}

/// Drops log lines of steps after `step` (those of a run interrupted after its last checkpoint).
fn forget_log_after(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: Vec<&str> = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_none_or(|s| s <= step)
        })
        .collect();
    maskdit_io::write_atomic(path, |file| {
        use std::io::Write;
        kept.iter().try_for_each(|line| writeln!(file, "{line}"))
    })
    .with_context(|| format!("cannot rewrite {}", path.display()))
}

/// The run settings: the recipe's, with the command line's changes.
fn run_options(args: &TrainArgs, recipe: &TrainPreset, config: &ModelConfig) -> TrainOptions {
    let mut options = recipe.options.clone();
    options.max_steps = args.steps.unwrap_or(options.max_steps);
    options.batch_size = args.batch.unwrap_or(options.batch_size);
    options.grad_accum = args.grad_accum.unwrap_or(options.grad_accum);
    options.lr = args.lr.unwrap_or(options.lr);
    options.seed = args.seed.unwrap_or(options.seed);
    options.xflip |= args.xflip;
    options.precision = args.precision;
    if !config.has_mask_token() {
        options.mae_loss_coef = 0.0;
    }
    options
}

/// The architecture: `--config`, else the recipe's.
fn run_config(args: &TrainArgs, recipe: &TrainPreset) -> Result<ModelConfig> {
    let Some(path) = &args.config else { return Ok(recipe.config.clone()) };
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    ModelConfig::from_json(&text).with_context(|| format!("{} is not a model configuration", path.display()))
}

/// A new run, or the run in `args.out` continued with `--resume`.
fn start_trainer(
    args: &TrainArgs,
    from: Option<(PathBuf, bool)>,
    recipe: &TrainPreset,
    device: &candle_core::Device,
) -> Result<Trainer> {
    let config = run_config(args, recipe)?;
    let options = run_options(args, recipe, &config);
    let data = open_data(&args.data, config.in_channels, config.input_size, args.xflip)?;
    let ckpt_dir = args.out.join("checkpoints");
    std::fs::create_dir_all(&ckpt_dir).with_context(|| format!("cannot create {}", ckpt_dir.display()))?;
    match (args.resume, latest_checkpoint(&ckpt_dir)?) {
        (true, Some(latest)) => {
            eprintln!("resuming from {}", latest.display());
            let mut trainer = Trainer::resume(&latest, data, device)?;
            forget_log_after(&args.out.join("log.jsonl"), trainer.step_count())?;
            if let Some(steps) = args.steps {
                trainer.set_max_steps(steps)?;
            }
            Ok(trainer)
        }
        (true, None) => bail!("--resume: no checkpoint in {}; start without --resume", ckpt_dir.display()),
        (false, Some(latest)) => bail!(
            "{} already holds checkpoints (latest {}); pass --resume to continue, or choose another --out",
            ckpt_dir.display(),
            latest.display()
        ),
        (false, None) => {
            let start = match &from {
                None => Start::Fresh,
                Some((path, strict)) => load_start(path, &config, *strict)?,
            };
            Ok(Trainer::new(config, options, data, start, device)?)
        }
    }
}

/// Runs `train` (from scratch, or `from` weights for `finetune`).
pub fn run(args: TrainArgs, from: Option<(PathBuf, bool)>) -> Result<()> {
    let recipe = preset(&args.preset).with_context(|| format!("presets: {}", PRESET_NAMES.join(", ")))?;
    let device = args.device.open()?;
    let trainer = start_trainer(&args, from, &recipe, &device)?;
    let every = args.checkpoint_every.unwrap_or(recipe.checkpoint_every).max(1);
    let Some(trainer) = train_loop(trainer, &args.out, every)? else { return Ok(()) };
    if let Some(path) = &args.export {
        checkpoint::save_model(&trainer.ema_weights(), trainer.config(), path)?;
        eprintln!("wrote the EMA weights to {}", path.display());
    }
    Ok(())
}

/// Trains to the end of the run, logging every step to `out/log.jsonl` and checkpointing every
/// `every` steps; on Ctrl-C saves a checkpoint and returns `None`.
fn train_loop(mut trainer: Trainer, out: &Path, every: u64) -> Result<Option<Trainer>> {
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst)).context("cannot install the Ctrl-C handler")?;
    }
    let ckpt_dir = out.join("checkpoints");
    let log = out.join("log.jsonl");
    let bar = progress::bar(trainer.options().max_steps, "training");
    bar.set_position(trainer.step_count());
    let started = std::time::Instant::now();
    let first_step = trainer.step_count();
    let save = |trainer: &Trainer| -> Result<PathBuf> {
        let path = ckpt_dir.join(format!("{:07}.safetensors", trainer.step_count()));
        trainer.save(&path)?;
        Ok(path)
    };
    while !trainer.finished() {
        if stop.load(Ordering::SeqCst) {
            let path = save(&trainer)?;
            bar.abandon_with_message("interrupted");
            eprintln!("interrupted: saved {}; continue with the same command and --resume", path.display());
            return Ok(None);
        }
        let report = trainer.train_step()?;
        let rate = (report.step - first_step) as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let line = serde_json::json!({"step": report.step, "loss": report.loss, "lr": report.lr,
            "mask_ratio": report.mask_ratio, "steps_per_s": rate});
        maskdit_io::append_line(&log, &line.to_string()).context("cannot write the training log")?;
        bar.set_message(format!("loss {:.4}", report.loss));
        bar.set_position(report.step);
        if report.step % every == 0 || trainer.finished() {
            save(&trainer)?;
        }
    }
    bar.finish_with_message("done");
    Ok(Some(trainer))
}

/// Loads starting weights for a fine-tune: model and EMA from an official `.pt` or a toolkit
/// checkpoint, matched by name; reports what it skipped or reset.
fn load_start(path: &Path, config: &ModelConfig, strict: bool) -> Result<Start> {
    let expected: HashMap<String, Vec<usize>> = maskdit::MaskDit::parameter_shapes(config)?.into_iter().collect();
    let pick = |set: WeightSet| -> Result<HashMap<String, Tensor>> {
        let tensors = checkpoint::read_tensors(path, set)?;
        let mut kept = HashMap::new();
        let mut skipped = Vec::new();
        for (name, t) in tensors {
            match expected.get(&name) {
                Some(shape) if shape.as_slice() == t.dims() => {
                    kept.insert(name, t);
                }
                _ => skipped.push(name),
            }
        }
        if strict && !skipped.is_empty() {
            bail!("{}: {} keys do not fit the model, e.g. `{}`", path.display(), skipped.len(), skipped[0]);
        }
        if !skipped.is_empty() {
            eprintln!(
                "{}: skipped {} keys that the model does not have: {}",
                set.key(),
                skipped.len(),
                skipped.join(", ")
            );
        }
        Ok(kept)
    };
    let mut model = pick(WeightSet::Model)?;
    let ema = match pick(WeightSet::Ema) {
        Ok(ema) => Some(ema),
        Err(e) => {
            eprintln!("no EMA weights ({e}); the EMA starts from the model weights");
            None
        }
    };
    let mut reset = Vec::new();
    let mut rng = <rand_chacha::ChaCha12Rng as rand::SeedableRng>::seed_from_u64(0);
    let fresh = TrainableModel::fresh(config, &mut rng, &candle_core::Device::Cpu)?;
    let fresh = fresh.weights()?;
    for name in expected.keys() {
        if !model.contains_key(name) {
            model.insert(name.clone(), fresh[name].clone());
            reset.push(name.clone());
        }
    }
    let ema = ema.map(|mut e| {
        for name in expected.keys() {
            if !e.contains_key(name) {
                e.insert(name.clone(), model[name].clone());
            }
        }
        e
    });
    if !reset.is_empty() {
        reset.sort();
        eprintln!("initialised {} parameters missing from the checkpoint: {}", reset.len(), reset.join(", "));
    }
    eprintln!("optimiser state starts fresh (AdamW moments are not taken from {})", path.display());
    Ok(Start::From { model, ema })
}
