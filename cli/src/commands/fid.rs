//! `maskdit fid` and `maskdit fid-stats`: FID (and the Inception Score) of image sets with the
//! FID Inception-v3, as pytorch-fid computes them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use maskdit_eval::{FidInception, ImageSet, Statistics};
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
}

/// Options of `maskdit fid`.
#[derive(Debug, Args)]
pub struct FidArgs {
    /// The first set: a folder of PNG/JPEG images, an .npz of images in ADM's layout (arr_0,
    /// N×H×W×3 uint8), or a statistics .npz (mu, sigma); several joined by commas form one set.
    first: String,
    /// The second set, in the same forms.
    second: String,
    /// Compute statistics from an .npz file's images (arr_0) even when it also holds mu and
    /// sigma (ADM's reference batches hold both).
    #[arg(long)]
    recompute: bool,
    /// One JSON line: fid, the image counts, and the Inception Score of each image set.
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
    /// The statistics file to write (mu and sigma, the official layout).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    network: InceptionArgs,
}

/// What one side of the comparison came to.
struct SetSummary {
    statistics: Statistics,
    /// Number of images (none for a statistics file).
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
            let network = FidInception::load(&path, &device)
                .with_context(|| format!("cannot load the FID Inception weights from {}", path.display()))?;
            self.network = Some(network);
        }
        self.network.as_ref().context("network loaded above")
    }
}

fn split_set(spec: &str) -> Vec<PathBuf> {
    spec.split(',').filter(|p| !p.is_empty()).map(PathBuf::from).collect()
}

/// A statistics file given alone as a set, unless `recompute` asks for its images.
fn statistics_file(paths: &[PathBuf], recompute: bool) -> Result<Option<Statistics>> {
    let is_npz = |p: &Path| p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("npz"));
    let mut found = None;
    for path in paths.iter().filter(|p| is_npz(p)) {
        let names = maskdit_eval::npz::array_names(path)?;
        let has_stats = names.iter().any(|n| n == "mu") && names.iter().any(|n| n == "sigma");
        let has_images = names.iter().any(|n| n == "arr_0");
        if has_stats && !(recompute && has_images) {
            if paths.len() > 1 {
                bail!("{} holds statistics (mu, sigma), which cannot be joined with other sources", path.display());
            }
            found = maskdit_eval::npz::read_statistics(path)?;
        }
    }
    Ok(found)
}

/// The features of an image set, with a progress bar.
fn image_features(network: &FidInception, paths: &[PathBuf], batch: usize) -> Result<maskdit_eval::SetFeatures> {
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

fn summarize(spec: &str, recompute: bool, network: &mut LazyNetwork, batch: usize) -> Result<SetSummary> {
    let paths = split_set(spec);
    if paths.is_empty() {
        bail!("an empty set was given; name folders or .npz files");
    }
    if let Some(statistics) = statistics_file(&paths, recompute)? {
        return Ok(SetSummary { statistics, images: None, score: None });
    }
    let features = image_features(network.get()?, &paths, batch)?;
    let score = (features.len() >= SCORE_SPLITS).then(|| features.inception_score(SCORE_SPLITS)).transpose()?;
    Ok(SetSummary { statistics: features.statistics()?, images: Some(features.len()), score })
}

/// Runs `maskdit fid`.
pub fn run(args: FidArgs) -> Result<()> {
    if args.network.batch == 0 {
        bail!("--batch must be positive");
    }
    let mut network = LazyNetwork { args: &args.network, network: None };
    let first = summarize(&args.first, args.recompute, &mut network, args.network.batch)?;
    let second = summarize(&args.second, args.recompute, &mut network, args.network.batch)?;
    if first.statistics.mu.len() != second.statistics.mu.len() {
        bail!(
            "the sets have {}- and {}-dimensional statistics: not both FID Inception statistics",
            first.statistics.mu.len(),
            second.statistics.mu.len()
        );
    }
    let fid = first.statistics.frechet_distance(&second.statistics)?;
    if !fid.is_finite() {
        bail!("the Fréchet distance came out {fid}: the statistics hold non-finite values");
    }
    if args.json {
        let side = |s: &SetSummary| {
            serde_json::json!({"images": s.images, "inception_score": s.score.map(|(m, _)| m),
                "inception_score_std": s.score.map(|(_, d)| d)})
        };
        println!("{}", serde_json::json!({"fid": fid, "first": side(&first), "second": side(&second)}));
    } else {
        for (name, s) in [(&args.first, &first), (&args.second, &second)] {
            let count = s.images.map_or("statistics file".to_string(), |n| format!("{n} images"));
            let score = s.score.map_or(String::new(), |(m, d)| format!(", Inception Score {m:.3} ± {d:.3}"));
            println!("{name}: {count}{score}");
        }
        println!("FID {fid:.4}");
    }
    Ok(())
}

/// Runs `maskdit fid-stats`.
pub fn run_stats(args: FidStatsArgs) -> Result<()> {
    if args.network.batch == 0 {
        bail!("--batch must be positive");
    }
    let mut network = LazyNetwork { args: &args.network, network: None };
    let features = image_features(network.get()?, &args.sources, args.network.batch)?;
    let statistics = features.statistics()?;
    maskdit_eval::npz::write_statistics(&statistics, &args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!("{}: statistics of {} images", args.out.display(), features.len());
    Ok(())
}
