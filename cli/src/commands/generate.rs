//! `maskdit generate`: class-conditional images, one PNG per seed.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use image::DynamicImage;
use maskdit_io::{Access, FolderLock};
use maskdit_pipeline::Pipeline;
use maskdit_registry::labels::resolve_class;
use maskdit_registry::Registry;
use maskdit_sampler::{DdpmOptions, Discretization, EdmOptions, GuidanceInterval, Sampler, Scaling, Schedule, Solver};

use crate::runtime::device::{DTypeChoice, RankDevices};
use crate::runtime::launch::{self, LaunchArgs};
use crate::runtime::model_args::ModelArgs;
use crate::runtime::progress;
use crate::runtime::seeds::{Seeds, Shard};

/// Options of `maskdit generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Class index or ImageNet name, repeatable (images cycle through them); random per seed
    /// when absent.
    #[arg(long = "class")]
    classes: Vec<String>,
    /// Seeds, one image each: `0-63`, `1,5,9`.
    #[arg(long, default_value = "0-7")]
    seeds: Seeds,
    /// Guidance scale (1 = off; default: the model's).
    #[arg(long, value_parser = crate::runtime::bounds::finite)]
    cfg: Option<f64>,
    /// Noise levels guidance applies to: `LOW:HIGH` (low < σ ≤ high) or `all` (default: the
    /// model's; the official samplers guide at all).
    #[arg(long)]
    guidance_interval: Option<IntervalChoice>,
    /// The sampler: EDM's Heun sampler, the generalized EDM sampler (set --solver etc.), or
    /// ancestral DDPM.
    #[arg(long, value_enum, default_value_t = SamplerKind::Edm)]
    sampler: SamplerKind,
    /// Sampling steps (default: the model's).
    #[arg(long, value_parser = crate::runtime::bounds::sampler_steps)]
    steps: Option<usize>,
    /// Generalized sampler: the ODE solver.
    #[arg(long, value_enum, default_value_t = Solver::Heun)]
    solver: Solver,
    /// Generalized sampler: how the noise levels are spaced.
    #[arg(long, value_enum, default_value_t = Discretization::Edm)]
    discretization: Discretization,
    /// Generalized sampler: the noise schedule σ(t).
    #[arg(long, value_enum, default_value_t = Schedule::Linear)]
    schedule: Schedule,
    /// Generalized sampler: the scaling s(t).
    #[arg(long, value_enum, default_value_t = Scaling::None)]
    scaling: Scaling,
    /// Stochastic churn (EDM S_churn; 0 = deterministic).
    #[arg(long, default_value_t = 0.0, value_parser = crate::runtime::bounds::finite)]
    s_churn: f64,
    /// Churn only for sigma >= S_min.
    #[arg(long, default_value_t = 0.0, value_parser = crate::runtime::bounds::not_nan)]
    s_min: f64,
    /// Churn only for sigma <= S_max.
    #[arg(long, default_value_t = f64::INFINITY, value_parser = crate::runtime::bounds::not_nan)]
    s_max: f64,
    /// Churn noise inflation.
    #[arg(long, default_value_t = 1.0, value_parser = crate::runtime::bounds::finite)]
    s_noise: f64,
    /// Images sampled at once.
    #[arg(long, default_value_t = 16, value_parser = crate::runtime::bounds::batch)]
    batch: usize,
    /// cpu, cuda (with --nproc: rank r on GPU r), cuda:N, or one GPU per rank: cuda:0,2.
    #[arg(long, default_value = "cpu")]
    device: RankDevices,
    /// Number format of the model and the VAE.
    #[arg(long, value_enum, default_value_t = DTypeChoice::F32)]
    dtype: DTypeChoice,
    /// Output folder: one `<seed:06d>.png` per seed.
    #[arg(long, default_value = "out")]
    out: PathBuf,
    /// Skip the seeds whose PNG is already in the output folder (to continue an interrupted
    /// run; every image depends only on its seed).
    #[arg(long)]
    resume: bool,
    /// Take only part `i/n` of the seeds (positions i, i+n, …), so n processes or machines
    /// share one sample set; `maskdit fid` takes their folders joined by commas.
    #[arg(long, default_value = "0/1")]
    shard: Shard,
    /// Also pack this run's images (its shard's seeds, in list order, RGB) into an .npz in
    /// ADM's layout (arr_0, N×H×W×3 uint8; ZIP64 past 4 GB), as ADM's evaluation suite reads.
    #[arg(long)]
    npz: Option<PathBuf>,
    /// Also write all images as one grid PNG.
    #[arg(long)]
    grid: Option<PathBuf>,
    /// Columns of the grid (default: about square).
    #[arg(long)]
    grid_columns: Option<usize>,
    /// Processes sharing the seeds (--nproc: rank r takes shard r/N; the grid and the .npz
    /// are packed by rank 0 once every rank is done).
    #[command(flatten)]
    launch: LaunchArgs,
}

/// What `--guidance-interval` says: every noise level, or a range of them.
#[derive(Debug, Clone, Copy)]
enum IntervalChoice {
    All,
    Range(GuidanceInterval),
}

impl std::str::FromStr for IntervalChoice {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        if text == "all" {
            return Ok(Self::All);
        }
        text.parse().map(Self::Range).map_err(|e: maskdit_sampler::Error| format!("{e} (or `all`)"))
    }
}

/// The sampler families `--sampler` chooses from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SamplerKind {
    /// EDM's Heun sampler.
    Edm,
    /// The generalized EDM sampler.
    Generalized,
    /// Ancestral DDPM.
    Ddpm,
}

fn sampler(args: &GenerateArgs, steps: usize) -> Sampler {
    if args.sampler == SamplerKind::Ddpm {
        return Sampler::Ddpm(DdpmOptions::new(steps));
    }
    let mut options = EdmOptions::heun(steps);
    if args.sampler == SamplerKind::Generalized {
        options.solver = args.solver;
        options.discretization = args.discretization;
        options.schedule = args.schedule;
        options.scaling = args.scaling;
    }
    options.s_churn = args.s_churn;
    options.s_min = args.s_min;
    options.s_max = args.s_max;
    options.s_noise = args.s_noise;
    Sampler::Edm(options)
}

/// Writes `image` to `path` as PNG, whole or not at all.
fn write_png(image: &DynamicImage, path: &Path) -> Result<()> {
    maskdit_io::write_atomic(path, |file| image.write_to(file, image::ImageFormat::Png).map_err(std::io::Error::other))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Tiles images into a grid of `columns` columns.
fn grid(images: &[DynamicImage], columns: usize) -> DynamicImage {
    let (w, h) = (images[0].width(), images[0].height());
    let columns = columns.clamp(1, images.len());
    let rows = images.len().div_ceil(columns);
    let mut canvas = image::RgbImage::new(w * columns as u32, h * rows as u32);
    for (i, img) in images.iter().enumerate() {
        let (x, y) = ((i % columns) as u32 * w, (i / columns) as u32 * h);
        image::imageops::replace(&mut canvas, &img.to_rgb8(), x as i64, y as i64);
    }
    DynamicImage::ImageRgb8(canvas)
}

/// Most images `--grid` tiles.
const GRID_MAX_IMAGES: u64 = 4096;

/// Refuses what would fail or destroy work only after sampling: class names unknown to a
/// registry model (before its download), a grid too large or over one of the run's own images.
fn check_request(args: &GenerateArgs, registry: &Registry) -> Result<()> {
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if let Some(entry) = args.model.model.as_ref().and_then(|name| registry.models.get(name)) {
        let classes = entry.num_classes.unwrap_or(1000);
        args.classes.iter().try_for_each(|c| resolve_class(c, classes, &[]).map(drop))?;
    }
    if args.grid.is_some() && args.seeds.len() > GRID_MAX_IMAGES {
        bail!("--grid tiles at most {GRID_MAX_IMAGES} images; ask for fewer --seeds or drop --grid");
    }
    let outputs = [("--grid", &args.grid), ("--npz", &args.npz)];
    for (flag, path) in outputs.iter().filter_map(|(flag, path)| path.as_ref().map(|p| (flag, p))) {
        let own = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u64>().ok());
        let same_folder = path
            .parent()
            .map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p })
            .zip(std::fs::canonicalize(&args.out).ok())
            .is_some_and(|(p, out)| std::fs::canonicalize(p).is_ok_and(|p| p == out));
        if let Some(seed) = own.filter(|&seed| same_folder && args.seeds.contains(seed)) {
            bail!("{flag} {} would overwrite the image of seed {seed}; write it elsewhere", path.display());
        }
    }
    if let (Some(grid), Some(npz)) = (&args.grid, &args.npz) {
        crate::runtime::outputs::refuse_overwriting_inputs("--npz", npz, [grid.as_path()])?;
    }
    Ok(())
}

/// Runs `maskdit generate`: alone, as the launcher of `--nproc` ranks, or as one rank.
pub fn run(args: GenerateArgs) -> Result<()> {
    let registry = Registry::load()?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    check_request(&args, &registry)?;
    let world = maskdit_parallel::World::from_env()?;
    if args.launch.launches(world.as_ref()) {
        let after = format!("The images written are kept in {}: rerun with --resume to finish", args.out.display());
        return launch::supervise(&args.launch, &args.device, &after);
    }
    let Some(world) = world else { return generate(&args, &registry, args.shard, None) };
    if args.shard != Shard::default() {
        bail!("--shard and ranks (--nproc, or WORLD_SIZE) both split the seeds: use one of them");
    }
    // Meeting at the start notices a missing rank before any work; the group is the barrier
    // after which rank 0 packs everything.
    launch::warn_without_secret(&world);
    let (group, _) = maskdit_parallel::TcpGroup::join(&world, b"", args.launch.timeout(), args.launch.timeout())?;
    generate(&args, &registry, Shard::new(world.rank, world.size), Some((&world, group)))
        .with_context(|| format!("rank {} of {}", world.rank, world.size))
}

/// Samples the seeds of `shard`; as one rank of `ranks`, waits for every rank before rank 0
/// packs the grid and the .npz.
fn generate(
    args: &GenerateArgs,
    registry: &Registry,
    shard: Shard,
    ranks: Option<(&maskdit_parallel::World, maskdit_parallel::TcpGroup)>,
) -> Result<()> {
    let main = ranks.as_ref().is_none_or(|(world, _)| world.is_main());
    // A run that packs the images read back (--grid, --npz) must be the folder's only writer;
    // shards that only write their own seeds may share it. Other ranks belong to rank 0's run.
    let access = if args.grid.is_some() || args.npz.is_some() { Access::Exclusive } else { Access::Shared };
    let _owner = main.then(|| FolderLock::acquire(&args.out, access)).transpose()?;
    let device = args.device.for_local_rank(ranks.as_ref().map_or(0, |(world, _)| world.local_rank))?.open()?;
    let dtype = args.dtype.dtype();
    let (loaded, decoder) = args.model.load(registry, &device, dtype)?;
    let config = loaded.model.config().clone();
    let classes = args
        .classes
        .iter()
        .map(|c| resolve_class(c, config.num_classes, &loaded.class_names))
        .collect::<maskdit_registry::Result<Vec<_>>>()?;
    let steps = args.steps.unwrap_or(loaded.steps);
    let cfg = match (args.cfg, config.num_classes) {
        (cfg, 0) => cfg.unwrap_or(1.0),
        (cfg, _) => cfg.unwrap_or(loaded.guidance),
    };
    let interval = match args.guidance_interval {
        Some(IntervalChoice::All) => None,
        Some(IntervalChoice::Range(interval)) => Some(interval),
        None => loaded.interval,
    };
    let pipeline = Pipeline::new(loaded.model, decoder, sampler(args, steps))
        .with_guidance(cfg, interval)
        .with_context(|| format!("--cfg {cfg}"))?;
    let png = |seed: u64| args.out.join(format!("{seed:06}.png"));
    // Positions in the seed list: `--class` cycles over them, `--shard` splits them.
    let pending = || {
        (0u64..)
            .zip(args.seeds.iter())
            .filter(|&(position, seed)| shard.takes(position) && !(args.resume && png(seed).is_file()))
    };
    let total = pending().count() as u64;
    let steps_total = total.saturating_mul(pipeline.sampler().num_steps() as u64);
    let bar = if main { progress::bar(steps_total, "sampling") } else { indicatif::ProgressBar::hidden() };
    let started = std::time::Instant::now();
    let (mut written, mut work) = (0u64, pending());
    loop {
        let (positions, chunk): (Vec<u64>, Vec<u64>) = work.by_ref().take(args.batch).unzip();
        if chunk.is_empty() {
            break;
        }
        // `--class` cycles over the positions in the seed list; without it each seed draws one.
        let chunk_classes: Option<Vec<usize>> = (!classes.is_empty())
            .then(|| positions.iter().map(|&p| classes[(p % classes.len() as u64) as usize]).collect());
        let done_before = bar.position();
        let images = pipeline
            .images(&chunk, chunk_classes.as_deref(), &mut |step| {
                bar.set_position(done_before + (step.done() * chunk.len()) as u64);
                ControlFlow::Continue(())
            })
            .map_err(|e| match e {
                maskdit_pipeline::Error::NonFinite { .. } => anyhow::anyhow!("{e} (--cfg {cfg})"),
                e => e.into(),
            })?;
        for (seed, image) in chunk.iter().zip(images) {
            write_png(&image, &png(*seed))?;
            written += 1;
        }
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let world_size = ranks.as_ref().map_or(1, |(world, _)| world.size);
    if let Some((_, mut group)) = ranks {
        maskdit_parallel::Collective::finish(&mut group).context("waiting for the other ranks")?;
    }
    if !main {
        return Ok(());
    }
    // The images of the whole request: this process's shard, or every rank's.
    let seeds: Vec<u64> =
        (0u64..).zip(args.seeds.iter()).filter(|&(p, _)| args.shard.takes(p)).map(|(_, seed)| seed).collect();
    let read_back = |seed: u64| -> Result<DynamicImage> {
        let path = png(seed);
        maskdit_io::open_image(&path).with_context(|| format!("cannot read back {}", path.display()))
    };
    if let Some(path) = &args.grid {
        let images = seeds.iter().map(|&seed| read_back(seed)).collect::<Result<Vec<_>>>()?;
        let columns = args.grid_columns.unwrap_or_else(|| (images.len() as f64).sqrt().ceil() as usize);
        write_png(&grid(&images, columns), path)?;
    }
    if let Some(npz) = &args.npz {
        let side = pipeline.image_side() as u32;
        let bar = progress::bar(seeds.len() as u64, "npz");
        maskdit_eval::npz::write_images(npz, seeds.len(), (side as usize, side as usize), &mut |i| {
            bar.set_position(i as u64 + 1);
            let path = png(seeds[i]);
            let image = maskdit_io::open_image(&path).map_err(|e| maskdit_eval::Error::Data {
                path: path.clone(),
                reason: format!("cannot be read back for the .npz ({e})"),
            })?;
            Ok(image.to_rgb8().into_raw())
        })
        .with_context(|| format!("cannot write {}", npz.display()))?;
        bar.finish_and_clear();
        eprintln!("packed {} images into {}", seeds.len(), npz.display());
    }
    if world_size > 1 {
        eprintln!(
            "{world_size} ranks wrote the {} images to {}; rank 0 wrote {written} in {seconds:.1} s ({:.2} images/s)",
            seeds.len(),
            args.out.display(),
            written as f64 / seconds.max(1e-9)
        );
        return Ok(());
    }
    let skipped = args.seeds.len() - total;
    let skipped =
        if skipped > 0 { format!(" ({skipped} seeds left to other shards or already written)") } else { String::new() };
    eprintln!(
        "wrote {written} images to {} in {seconds:.1} s ({:.2} images/s){skipped}",
        args.out.display(),
        written as f64 / seconds.max(1e-9)
    );
    Ok(())
}
