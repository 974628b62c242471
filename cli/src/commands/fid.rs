//! `maskdit fid` and `maskdit fid-stats`: the paper's evaluation row — FID (as pytorch-fid
//! computes it), sFID, Inception Score, precision and recall (as ADM's evaluator computes them) —
//! of image sets and stored evaluation files.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use maskdit_eval::npz::EvaluationFile;
use maskdit_eval::{
    precision_recall, FidInception, ImageSet, InputMode, PrecisionRecall, SetFeatures, Statistics, FEATURE_DIMS,
    SPATIAL_DIMS,
};
use maskdit_registry::fetch::inception_weights;

use crate::runtime::device::DeviceChoice;
use crate::runtime::progress;

/// Splits of the Inception Score (the original code's).
const SCORE_SPLITS: usize = 10;

/// Options shared by `fid` and `fid-stats`: the network and how to run it.
#[derive(Debug, Args)]
pub struct InceptionArgs {
    /// The FID Inception weights: pytorch-fid's pt_inception-2015-12-05-6726825d.pth as
    /// downloaded (also torch-fidelity's copy), or a safetensors file with the same names
    /// (default: the registry's inception-fid, from the cache).
    #[arg(long)]
    inception: Option<PathBuf>,
    /// Images per network call.
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// How images are resized to 299×299 and scaled: pytorch-fid's way (PyTorch's bilinear
    /// resize; FID as pytorch-fid and the official fid.py tables give it), or adm (the TensorFlow
    /// graph's legacy bilinear resize, as ADM's evaluator feeds it: the paper's sFID, precision
    /// and recall).
    #[arg(long, value_enum, default_value_t = Resize::PytorchFid)]
    resize: Resize,
}

/// `--resize` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Resize {
    /// PyTorch's bilinear resize of x/255, then 2x − 1.
    PytorchFid,
    /// TF1's legacy bilinear resize, then (x − 128) / 128.
    Adm,
}

/// Options of `maskdit fid`.
#[derive(Debug, Args)]
pub struct FidArgs {
    /// The samples: a folder of PNG/JPEG images, an .npz of images in ADM's layout (arr_0,
    /// N×H×W×3 uint8), or an evaluation .npz (statistics and/or features, as fid-stats writes
    /// them); several joined by commas form one set.
    samples: String,
    /// The reference, in the same forms (ADM's reference batches, images plus statistics, are
    /// read as they are: statistics from the file, features from the images).
    reference: String,
    /// Compute everything from an .npz file's images (arr_0) even when it also holds statistics.
    #[arg(long)]
    recompute: bool,
    /// Use stored statistics without running the network over a file's images: no precision or
    /// recall for sets stored that way.
    #[arg(long, conflicts_with = "recompute")]
    statistics_only: bool,
    /// One JSON line: fid, sfid, precision, recall (null where they cannot be had, with the
    /// reason under "missing"), and for each set its image count and Inception Score.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    network: InceptionArgs,
}

/// Options of `maskdit fid-stats`.
#[derive(Debug, Args)]
pub struct FidStatsArgs {
    /// Folders of images and ADM-layout .npz files, taken as one set.
    #[arg(required = true)]
    sources: Vec<PathBuf>,
    /// The evaluation file to write: FID's statistics (mu, sigma, the official layout) and
    /// sFID's (mu_s, sigma_s, ADM's).
    #[arg(long)]
    out: PathBuf,
    /// Also store the 2048-d pool features (pool_features, N×2048 f32), which precision and
    /// recall need: 8 KB per image.
    #[arg(long)]
    features: bool,
    #[command(flatten)]
    network: InceptionArgs,
}

/// What one side of the comparison came to.
struct SetSummary {
    /// The set as given.
    name: String,
    statistics: Statistics,
    spatial_statistics: Option<Statistics>,
    pool_features: Option<Vec<f32>>,
    /// Number of images the network saw (none when everything came from a file).
    images: Option<usize>,
    /// Inception Score mean and standard deviation (image sets of at least 10 images).
    score: Option<(f64, f64)>,
}

/// The network, loaded on first use (two statistics files need none).
struct LazyNetwork<'a> {
    args: &'a InceptionArgs,
    network: Option<FidInception>,
}

impl LazyNetwork<'_> {
    fn get(&mut self) -> Result<&FidInception> {
        if self.network.is_none() {
            let path = inception_weights(self.args.inception.as_deref())?;
            let device = self.args.device.open()?;
            let input = match self.args.resize {
                Resize::PytorchFid => InputMode::PytorchFid,
                Resize::Adm => InputMode::Adm,
            };
            let network = FidInception::load(&path, &device)
                .with_context(|| format!("cannot load the FID Inception weights from {}", path.display()))?
                .with_input_mode(input);
            self.network = Some(network);
        }
        self.network.as_ref().context("network loaded above")
    }
}

fn split_set(spec: &str) -> Vec<PathBuf> {
    spec.split(',').filter(|p| !p.is_empty()).map(PathBuf::from).collect()
}

fn is_npz(path: &Path) -> bool {
    path.is_file() && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npz"))
}

/// The features of an image set, with a progress bar.
fn image_features(network: &FidInception, paths: &[PathBuf], batch: usize) -> Result<SetFeatures> {
    let set = ImageSet::open(paths)?;
    let count = set.len();
    if count < 2 {
        bail!("{} holds {count} image(s); statistics need at least 2", describe(paths));
    }
    let bar = progress::bar(count as u64, "inception");
    let features = network.extract(&set, batch, &mut |done| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    Ok(features)
}

fn describe(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(",")
}

/// Everything the network gives for the images of `paths`.
fn from_images(name: &str, paths: &[PathBuf], network: &mut LazyNetwork, batch: usize) -> Result<SetSummary> {
    let features = image_features(network.get()?, paths, batch)?;
    let score = (features.len() >= SCORE_SPLITS).then(|| features.inception_score(SCORE_SPLITS)).transpose()?;
    Ok(SetSummary {
        name: name.to_string(),
        statistics: features.statistics()?,
        spatial_statistics: Some(features.spatial_statistics()?),
        images: Some(features.len()),
        score,
        pool_features: Some(features.pool),
    })
}

fn summarize(spec: &str, args: &FidArgs, network: &mut LazyNetwork) -> Result<SetSummary> {
    let paths = split_set(spec);
    if paths.is_empty() {
        bail!("an empty set was given; name folders or .npz files");
    }
    let batch = args.network.batch;
    let [path] = paths.as_slice() else {
        if let Some(stored) = paths.iter().find(|p| is_npz(p) && !has_only_images(p)) {
            bail!("{} holds statistics or features, which cannot be joined with other sources", stored.display());
        }
        return from_images(spec, &paths, network, batch);
    };
    if !is_npz(path) || has_only_images(path) || args.recompute {
        return from_images(spec, &paths, network, batch);
    }
    let stored = EvaluationFile::read(path)?;
    let has_images = maskdit_eval::npz::array_names(path)?.iter().any(|n| n == "arr_0");
    if has_images && stored.pool_features.is_none() && !args.statistics_only {
        // ADM's reference batches: the statistics as stored, the features from the images.
        let computed = from_images(spec, &paths, network, batch)?;
        return Ok(SetSummary {
            statistics: stored.statistics.unwrap_or(computed.statistics),
            spatial_statistics: stored.spatial_statistics.or(computed.spatial_statistics),
            ..computed
        });
    }
    let statistics = match (stored.statistics, &stored.pool_features) {
        (Some(statistics), _) => statistics,
        (None, Some(features)) => Statistics::from_features(features, FEATURE_DIMS)?,
        (None, None) => bail!("{} holds neither statistics (mu, sigma) nor pool features", path.display()),
    };
    Ok(SetSummary {
        name: spec.to_string(),
        statistics,
        spatial_statistics: stored.spatial_statistics,
        pool_features: stored.pool_features,
        images: None,
        score: None,
    })
}

/// Whether an .npz file holds images only (nothing an evaluation file stores).
fn has_only_images(path: &Path) -> bool {
    let names = maskdit_eval::npz::array_names(path).unwrap_or_default();
    !names.iter().any(|n| ["mu", "sigma", "mu_s", "sigma_s", "pool_features"].contains(&n.as_str()))
}

/// The five numbers of the evaluation, each with the reason it is missing where it is.
struct Report {
    fid: f64,
    sfid: std::result::Result<f64, String>,
    precision_recall: std::result::Result<PrecisionRecall, String>,
}

fn evaluate(samples: &SetSummary, reference: &SetSummary, device: &candle_core::Device) -> Result<Report> {
    if samples.statistics.mu.len() != FEATURE_DIMS || reference.statistics.mu.len() != FEATURE_DIMS {
        bail!(
            "the sets have {}- and {}-dimensional statistics: not both FID Inception statistics ({FEATURE_DIMS})",
            samples.statistics.mu.len(),
            reference.statistics.mu.len()
        );
    }
    let fid = samples.statistics.frechet_distance(&reference.statistics)?;
    if !fid.is_finite() {
        bail!("the Fréchet distance came out {fid}: the statistics hold non-finite values");
    }
    let without = |s: &SetSummary, what: &str, how: &str| format!("{} holds no {what}; {how}", s.name);
    let sfid = match (&samples.spatial_statistics, &reference.spatial_statistics) {
        (Some(a), Some(b)) if a.mu.len() == SPATIAL_DIMS && b.mu.len() == SPATIAL_DIMS => Ok(a.frechet_distance(b)?),
        (Some(_), Some(_)) => Err(format!("the spatial statistics are not {SPATIAL_DIMS}-dimensional")),
        (None, _) => Err(without(samples, "spatial statistics (mu_s, sigma_s)", "write them with fid-stats")),
        (_, None) => Err(without(reference, "spatial statistics (mu_s, sigma_s)", "write them with fid-stats")),
    };
    let how = "give its images, or write them with fid-stats --features";
    let precision_recall = match (&samples.pool_features, &reference.pool_features) {
        (Some(a), Some(b)) => Ok(precision_recall(a, b, FEATURE_DIMS, device)?),
        (None, _) => Err(without(samples, "pool features", how)),
        (_, None) => Err(without(reference, "pool features", how)),
    };
    Ok(Report { fid, sfid, precision_recall })
}

/// Runs `maskdit fid`.
pub fn run(args: FidArgs) -> Result<()> {
    if args.network.batch == 0 {
        bail!("--batch must be positive");
    }
    let mut network = LazyNetwork { args: &args.network, network: None };
    let samples = summarize(&args.samples, &args, &mut network)?;
    let reference = summarize(&args.reference, &args, &mut network)?;
    let device = match &network.network {
        Some(network) => network.device().clone(),
        None => args.network.device.open()?,
    };
    let report = evaluate(&samples, &reference, &device)?;
    if args.json {
        let side = |s: &SetSummary| {
            serde_json::json!({"images": s.images, "inception_score": s.score.map(|(m, _)| m),
                "inception_score_std": s.score.map(|(_, d)| d)})
        };
        let mut missing = serde_json::Map::new();
        if let Err(why) = &report.sfid {
            missing.insert("sfid".into(), why.clone().into());
        }
        if let Err(why) = &report.precision_recall {
            missing.insert("precision_recall".into(), why.clone().into());
        }
        let pr = report.precision_recall.as_ref().ok();
        println!(
            "{}",
            serde_json::json!({"fid": report.fid, "sfid": report.sfid.as_ref().ok(),
                "precision": pr.map(|p| p.precision), "recall": pr.map(|p| p.recall),
                "samples": side(&samples), "reference": side(&reference), "missing": missing})
        );
        return Ok(());
    }
    for (role, s) in [("samples", &samples), ("reference", &reference)] {
        let count = s.images.map_or("stored statistics".to_string(), |n| format!("{n} images"));
        let score = s.score.map_or(String::new(), |(m, d)| format!(", Inception Score {m:.3} ± {d:.3}"));
        println!("{role} {}: {count}{score}", s.name);
    }
    println!("FID        {:.4}", report.fid);
    match &report.sfid {
        Ok(sfid) => println!("sFID       {sfid:.4}"),
        Err(why) => println!("sFID       — ({why})"),
    }
    match &report.precision_recall {
        Ok(pr) => println!("precision  {:.4}\nrecall     {:.4}", pr.precision, pr.recall),
        Err(why) => println!("precision  —\nrecall     — ({why})"),
    }
    Ok(())
}

/// Runs `maskdit fid-stats`.
pub fn run_stats(args: FidStatsArgs) -> Result<()> {
    crate::runtime::outputs::refuse_overwriting_inputs("--out", &args.out, args.sources.iter().map(PathBuf::as_path))?;
    if args.network.batch == 0 {
        bail!("--batch must be positive");
    }
    let mut network = LazyNetwork { args: &args.network, network: None };
    let features = image_features(network.get()?, &args.sources, args.network.batch)?;
    features
        .evaluation_file(args.features)?
        .write(&args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let what = if args.features { "statistics and pool features" } else { "statistics" };
    println!("{}: {what} of {} images", args.out.display(), features.len());
    Ok(())
}
