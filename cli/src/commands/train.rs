//! `maskdit train` and `maskdit finetune`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Args;
use indicatif::ProgressBar;
use maskdit::{weights, ModelConfig};
use maskdit_train::data::{Dataset, LmdbDataset, ShardDataset, WithoutLabels};
use maskdit_train::{
    check_same_run, preset, short_list, Precision, RunFolder, Start, TrainOptions, TrainPreset, Trainer, PRESET_NAMES,
};

use crate::commands::train_eval::{EvalArgs, Evaluator};
use crate::runtime::device::RankDevices;
use crate::runtime::launch::{self, LaunchArgs};
use crate::runtime::progress;

/// A run stopped by Ctrl-C after saving a checkpoint (exit status 130).
#[derive(Debug)]
pub struct Interrupted {
    /// The checkpoint saved on the way out.
    pub saved: PathBuf,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted: saved {}; continue with the same command and --resume", self.saved.display())
    }
}

impl std::error::Error for Interrupted {}

/// Options shared by `train` and `finetune`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The recipe.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(PRESET_NAMES))]
    preset: String,
    /// Training data: safetensors shards (files or folders of them, from `maskdit encode`
    /// or with `images` + `labels`), an official latent LMDB folder, or a registry dataset
    /// such as imagenet256-latents (see `maskdit list`).
    #[arg(long, required = true, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Architecture as JSON (the official field names, e.g. a golden `config.json`), replacing
    /// the preset's.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Classes of the model (0: unconditional). Default: the data's — as many as its
    /// classes.json names, none when it has no labels — else the preset's (or --config's).
    /// A fine-tune to other classes starts their label embedding fresh.
    #[arg(long)]
    num_classes: Option<usize>,
    /// Train an unconditional model on labeled data (its labels are not used).
    #[arg(long)]
    ignore_labels: bool,
    /// Run folder: checkpoints go to OUT/checkpoints, the log to OUT/log.jsonl.
    #[arg(long)]
    out: PathBuf,
    /// Continue from the latest checkpoint in OUT.
    #[arg(long)]
    resume: bool,
    /// Total steps of the run (default: the preset's).
    #[arg(long)]
    steps: Option<u64>,
    /// Examples per step, over all ranks (default: the preset's, the paper's global batch).
    #[arg(long)]
    batch: Option<usize>,
    /// Micro-batches per step and rank (gradient accumulation; default: as many as keep each
    /// micro-batch within the preset's per-GPU batch).
    #[arg(long)]
    grad_accum: Option<usize>,
    /// Learning rate (default: the preset's).
    #[arg(long, value_parser = crate::runtime::bounds::finite)]
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
    /// cpu, cuda (rank r on GPU r), cuda:N, or one GPU per rank: cuda:0,2.
    #[arg(long, default_value = "cpu")]
    device: RankDevices,
    /// Arithmetic of the passes: f32, or bf16 (mixed precision: bf16 forward and backward on
    /// f32 master weights; meant for CUDA, slow on the CPU).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    precision: Precision,
    /// FID while training.
    #[command(flatten)]
    eval: EvalArgs,
    /// Data-parallel ranks.
    #[command(flatten)]
    launch: LaunchArgs,
}

/// Options of `finetune`: the starting checkpoint, then those of `train`.
#[derive(Debug, Args)]
pub struct FinetuneArgs {
    /// Starting checkpoint: an official .pt (model + ema; optimiser state not needed) or a
    /// toolkit checkpoint.
    #[arg(long)]
    pub from: PathBuf,
    /// Start even when the checkpoint does not fit the architecture beyond the expected
    /// differences (position tables, decoder, label embedding): misfits are initialised fresh.
    #[arg(long)]
    pub allow_partial: bool,
    /// The run.
    #[command(flatten)]
    pub train: TrainArgs,
}

/// Reads the data given on the command line: shard files or folders, an LMDB folder, or the
/// name of a registry dataset (fetched when not cached).
fn open_data(paths: &[PathBuf], channels: usize, size: usize, xflip: bool) -> Result<Box<dyn Dataset>> {
    if let [name] = paths {
        let registry = maskdit_registry::Registry::load()?;
        if let Some(entry) = registry.datasets.get(&*name.to_string_lossy()).filter(|_| !name.exists()) {
            if (entry.channels, entry.resolution) != (channels, size) {
                bail!(
                    "{} holds {}x{res}x{res} latents but the model takes {channels}x{size}x{size}; choose the matching \
                     preset or dataset",
                    name.display(),
                    entry.channels,
                    res = entry.resolution
                );
            }
            let dir = maskdit_registry::fetch::fetch_dataset(
                &name.to_string_lossy(),
                entry,
                &mut crate::runtime::progress::DownloadBar::default(),
            )?;
            let ds = LmdbDataset::open(&dir, channels, size, xflip, maskdit_vae::SD_SCALE_FACTOR)?;
            return Ok(Box::new(ds));
        }
    }
    if let [dir] = paths {
        if dir.join("data.mdb").exists() {
            let ds = LmdbDataset::open(dir, channels, size, xflip, maskdit_vae::SD_SCALE_FACTOR)?;
            return Ok(Box::new(ds));
        }
    }
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let set = maskdit_train::data::shards_in(path)?;
            if !set.has_manifest {
                eprintln!(
                    "warning: {} has no {} (encoded before manifests existed?), so a partial or mixed set cannot \
                     be told apart; encode it again to be sure",
                    path.display(),
                    maskdit_train::data::MANIFEST_FILE
                );
            }
            files.extend(set.files);
        } else if path.exists() {
            files.push(path.clone());
        } else {
            bail!("data {} does not exist", path.display());
        }
    }
    Ok(Box::new(ShardDataset::open(&files, maskdit_vae::SD_SCALE_FACTOR)?))
}

/// Micro-batches per step on each of `world` ranks: the fewest that keep a micro-batch within
/// `per_gpu` examples and split the rank's share evenly.
fn default_grad_accum(batch: usize, world: usize, per_gpu: usize) -> usize {
    let share = (batch / world.max(1)).max(1);
    (share.div_ceil(per_gpu.max(1))..=share).find(|&n| share.is_multiple_of(n)).unwrap_or(1)
}

/// The run settings: the recipe's, with the command line's changes, for `world` ranks.
fn run_options(args: &TrainArgs, recipe: &TrainPreset, config: &ModelConfig, world: usize) -> TrainOptions {
    let mut options = recipe.options.clone();
    options.max_steps = args.steps.unwrap_or(options.max_steps);
    options.batch_size = args.batch.unwrap_or(options.batch_size);
    options.grad_accum =
        args.grad_accum.unwrap_or_else(|| default_grad_accum(options.batch_size, world, recipe.per_gpu_batch));
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

/// The class names of the data (`classes.json` in its folders, as `maskdit encode` writes it,
/// or beside its shard files), if it has them.
fn data_class_names(paths: &[PathBuf]) -> Result<Option<(PathBuf, Vec<String>)>> {
    let mut found: Option<(PathBuf, Vec<String>)> = None;
    for path in paths {
        let folder = if path.is_dir() { Some(path.as_path()) } else { path.parent() };
        let Some(file) = folder.map(|f| f.join("classes.json")).filter(|f| f.is_file()) else { continue };
        let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
        let names: Vec<String> =
            serde_json::from_str(&text).with_context(|| format!("{} is not a list of class names", file.display()))?;
        maskdit_registry::labels::check_distinct(&names).with_context(|| format!("in {}", file.display()))?;
        match &found {
            Some((first, known)) if *known != names => bail!(
                "{} and {} name different classes; train on data of one set of classes",
                first.display(),
                file.display()
            ),
            Some(_) => {}
            None => found = Some((file, names)),
        }
    }
    Ok(found)
}

/// Sets the model's class count from `--num-classes`, else from the data (its classes.json, or
/// 0 when it has no labels) unless `--config` fixes the architecture; returns the class names
/// the model gets (those of the data when they fit, else none).
fn fit_classes(args: &TrainArgs, config: &mut ModelConfig, data: &dyn Dataset, main: bool) -> Result<Vec<String>> {
    let named = if data.labeled() { data_class_names(&args.data)? } else { None };
    let before = config.num_classes;
    let source = match (args.num_classes, data.labeled(), &named) {
        (Some(n), ..) => {
            config.num_classes = n;
            "--num-classes".to_string()
        }
        (None, false, _) if args.config.is_none() => {
            config.num_classes = 0;
            if args.ignore_labels { "--ignore-labels" } else { "data without labels" }.to_string()
        }
        (None, true, Some((file, names))) if args.config.is_none() => {
            config.num_classes = names.len();
            file.display().to_string()
        }
        _ => "the architecture".to_string(),
    };
    if main && config.num_classes != before {
        match config.num_classes {
            0 => eprintln!("an unconditional model ({source})"),
            n => eprintln!("a model of {n} classes ({source})"),
        }
    }
    Ok(named.map(|(_, names)| names).filter(|names| names.len() == config.num_classes).unwrap_or_default())
}

/// A new run, or the run in `args.out` continued with `--resume`.
fn start_trainer(
    args: &TrainArgs,
    from: Option<(PathBuf, bool)>,
    recipe: &TrainPreset,
    device: &candle_core::Device,
    world: usize,
    main: bool,
) -> Result<(Trainer, Vec<String>)> {
    let mut config = run_config(args, recipe)?;
    let mut data = open_data(&args.data, config.in_channels, config.input_size, args.xflip)?;
    if args.ignore_labels {
        data = Box::new(WithoutLabels(data));
    }
    let class_names = fit_classes(args, &mut config, data.as_ref(), main)?;
    let options = run_options(args, recipe, &config, world);
    let run = RunFolder::new(&args.out);
    run.create()?;
    let ckpt_dir = run.checkpoint_dir();
    match (args.resume, run.latest()?) {
        (true, Some(latest)) => {
            if main {
                eprintln!("resuming from {}", latest.display());
            }
            let mut trainer = run.resume(data, device)?;
            check_same_run(&trainer, &config, &options).with_context(|| {
                format!("cannot --resume the run in {} (only --steps may change)", args.out.display())
            })?;
            if main {
                run.forget_log_after(trainer.step_count())?;
            }
            if let Some(steps) = args.steps {
                trainer.set_max_steps(steps)?;
            }
            Ok((trainer, class_names))
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
                Some((path, allow_partial)) => load_start(path, &config, *allow_partial, main)?,
            };
            Ok((Trainer::new(config, options, data, start, device)?, class_names))
        }
    }
}

/// Runs `train` (from scratch, or `from` weights for `finetune`).
pub fn run(args: TrainArgs, from: Option<(PathBuf, bool)>) -> Result<()> {
    if let Some(export) = &args.export {
        if !maskdit_io::is_safetensors(export) {
            bail!(
                "--export {} should end in .safetensors (the weights are written with their architecture)",
                export.display()
            );
        }
        // The run's checkpoints are read back by --resume; the rest of the run folder is not.
        let checkpoints = RunFolder::new(&args.out).checkpoint_dir();
        let inputs = args.data.iter().chain(from.as_ref().map(|(path, _)| path)).chain([&checkpoints]);
        crate::runtime::outputs::refuse_overwriting_inputs("--export", export, inputs.map(PathBuf::as_path))?;
    }
    let recipe = preset(&args.preset).with_context(|| format!("presets: {}", PRESET_NAMES.join(", ")))?;
    // Set by a launcher, even for one rank (which then still runs its collective: a 1-rank NCCL
    // run checks the NCCL set-up on a machine with one GPU).
    let world = maskdit_parallel::World::from_env()?;
    if args.launch.launches(world.as_ref()) {
        let after = format!(
            "Checkpoints are written whole: the last one in {} is intact; fix the cause and rerun with --resume",
            args.out.join("checkpoints").display()
        );
        return launch::supervise(&args.launch, &args.device, &after);
    }
    match &world {
        None => run_rank(&args, from, &recipe, None),
        Some(w) => run_rank(&args, from, &recipe, Some(w)).map_err(|e| {
            if e.is::<Interrupted>() || e.is::<launch::RanksExited>() {
                e
            } else {
                e.context(format!("rank {} of {}", w.rank, w.size))
            }
        }),
    }
}

/// Trains as the only process, or as one rank of `world`.
fn run_rank(
    args: &TrainArgs,
    from: Option<(PathBuf, bool)>,
    recipe: &TrainPreset,
    world: Option<&maskdit_parallel::World>,
) -> Result<()> {
    let main = world.is_none_or(|w| w.is_main());
    // The main process owns the run folder until it ends; the other ranks write no files.
    let _owner = main.then(|| RunFolder::new(&args.out).own()).transpose()?;
    let device = args.device.for_local_rank(world.map_or(0, |w| w.local_rank))?.open()?;
    let (mut trainer, class_names) = start_trainer(args, from, recipe, &device, world.map_or(1, |w| w.size), main)?;
    if let Some(world) = world {
        trainer.join(launch::connect(world, &device, &args.launch)?)?;
    }
    let evaluator = if main { Evaluator::new(&args.eval, trainer.config(), &device)? } else { None };
    let every = args.checkpoint_every.unwrap_or(recipe.checkpoint_every).max(1);
    let mut trainer = train_loop(trainer, &args.out, every, evaluator.as_ref(), &device)?;
    trainer.finish()?;
    if let Some(path) = args.export.as_ref().filter(|_| main) {
        weights::save_model(&trainer.ema_weights(), trainer.config(), &class_names, path)?;
        match class_names.len() {
            0 => eprintln!("wrote the EMA weights to {}", path.display()),
            n => eprintln!("wrote the EMA weights and the names of the {n} classes to {}", path.display()),
        }
    }
    Ok(())
}

/// Trains to the end of the run, logging every step to `out/log.jsonl`, checkpointing every
/// `every` steps and measuring FID when `evaluator` is due; on Ctrl-C (on any rank) saves a
/// checkpoint and fails with [`Interrupted`]. Only rank 0 writes and shows progress.
fn train_loop(
    mut trainer: Trainer,
    out: &Path,
    every: u64,
    evaluator: Option<&Evaluator>,
    device: &Device,
) -> Result<Trainer> {
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst)).context("cannot install the Ctrl-C handler")?;
    }
    let run = RunFolder::new(out);
    let main = trainer.rank() == 0;
    let bar = if main { progress::bar(trainer.options().max_steps, "training") } else { ProgressBar::hidden() };
    bar.set_position(trainer.step_count());
    let started = std::time::Instant::now();
    let first_step = trainer.step_count();
    let save = |trainer: &Trainer| -> Result<PathBuf> {
        let path = run.checkpoint(trainer.step_count());
        if main {
            trainer.save(&path)?;
        }
        Ok(path)
    };
    while !trainer.finished() {
        if trainer.any_rank(stop.load(Ordering::SeqCst))? {
            let path = save(&trainer)?;
            bar.abandon_with_message("interrupted");
            if !main {
                // Rank 0 says what was saved.
                return Err(launch::RanksExited(130).into());
            }
            return Err(Interrupted { saved: path }.into());
        }
        let report = trainer.train_step()?;
        let rate = (report.step - first_step) as f64 / started.elapsed().as_secs_f64().max(1e-9);
        if main {
            let mut line = serde_json::json!({"step": report.step, "loss": report.loss, "lr": report.lr,
                "mask_ratio": report.mask_ratio, "steps_per_s": rate});
            if let Some(peak) = crate::runtime::device::peak_device_mib(device)? {
                line["peak_device_mib"] = serde_json::json!(peak);
            }
            run.append_log(&line).context("cannot write the training log")?;
        }
        bar.set_message(format!("loss {:.4}", report.loss));
        bar.set_position(report.step);
        if report.step % every == 0 || trainer.finished() {
            save(&trainer)?;
        }
        if let Some(evaluator) = evaluator.filter(|e| e.due(report.step, trainer.finished())) {
            bar.set_message("measuring FID");
            let m = evaluator.measure(trainer.ema_weights(), trainer.config(), device)?;
            let line = serde_json::json!({"step": report.step, "fid": m.fid, "eval_images": m.images,
                "eval_seconds": m.seconds});
            run.append_log(&line).context("cannot write the training log")?;
            bar.println(format!(
                "step {}: FID {:.3} ({} EMA samples, {:.0} s)",
                report.step, m.fid, m.images, m.seconds
            ));
        }
    }
    bar.finish_with_message("done");
    Ok(trainer)
}

/// Loads the starting weights of a fine-tune ([`maskdit_train::start_from_checkpoint`]) and, on
/// the main rank, says what was skipped or initialised fresh.
fn load_start(path: &Path, config: &ModelConfig, allow_partial: bool, main: bool) -> Result<Start> {
    let (start, report) = maskdit_train::start_from_checkpoint(path, config, allow_partial)?;
    if main {
        for (set, skipped) in &report.skipped {
            eprintln!(
                "{}: skipped {} tensors that do not fit the model: {}",
                set.key(),
                skipped.len(),
                short_list(skipped)
            );
        }
        if let Some(why) = &report.ema_from_model {
            eprintln!("no EMA weights ({why}); the EMA starts from the model weights");
        }
        if !report.initialised.is_empty() {
            eprintln!(
                "initialised {} parameters missing from the checkpoint: {}",
                report.initialised.len(),
                short_list(&report.initialised)
            );
        }
        eprintln!("optimiser state starts fresh (AdamW moments are not taken from {})", path.display());
    }
    Ok(start)
}
