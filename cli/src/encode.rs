//! `maskdit encode`: an image folder (one subfolder per class) → latent shards for training, or
//! pixel shards for pixel-space models (`--vae none`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use clap::Args;
use maskdit_train::data::write_shard;
use maskdit_vae::image::{center_crop_adm, from_image};
use maskdit_vae::Autoencoder;

use crate::device::DeviceChoice;
use crate::progress;
use crate::registry::Registry;

/// Options of `maskdit encode`.
#[derive(Debug, Args)]
pub struct EncodeArgs {
    /// Image folder with one subfolder per class (classes numbered in name order).
    #[arg(long)]
    images: PathBuf,
    /// Output folder for `shard-NNNNN.safetensors` files and `classes.json`.
    #[arg(long)]
    out: PathBuf,
    /// VAE: registry name or weights file; `none` writes the pixels themselves (u8 `images`
    /// shards) for pixel-space models such as the embedded MNIST model.
    #[arg(long, default_value = "sd-vae-ft-mse")]
    vae: String,
    /// Image side after the ADM centre crop (256 or 512 for the VAE; e.g. 28 for MNIST-like
    /// pixel models).
    #[arg(long, default_value_t = 256)]
    resolution: u32,
    /// With `--vae none`: one grey channel instead of RGB.
    #[arg(long)]
    grey: bool,
    /// Examples per shard.
    #[arg(long, default_value_t = 4096)]
    shard_size: usize,
    /// Images encoded at once.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_lowercase().as_str(), "png" | "jpg" | "jpeg" | "jpe"))
}

/// Class names (in name order) and every image with its class index.
struct Scan {
    classes: Vec<String>,
    items: Vec<(PathBuf, usize)>,
}

/// The images of each class subfolder, classes in name order.
fn scan(root: &Path) -> Result<Scan> {
    let mut classes: Vec<PathBuf> = std::fs::read_dir(root)
        .with_context(|| format!("cannot read the image folder {}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    if classes.is_empty() {
        bail!("{} has no class subfolders; put the images of each class in its own subfolder", root.display());
    }
    let mut items = Vec::new();
    for (label, dir) in classes.iter().enumerate() {
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| is_image(p)).collect();
        files.sort();
        items.extend(files.into_iter().map(|f| (f, label)));
    }
    if items.is_empty() {
        bail!("no PNG or JPEG images under {}", root.display());
    }
    let names =
        classes.iter().map(|c| c.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()).collect();
    Ok(Scan { classes: names, items })
}

/// Runs `maskdit encode`.
pub fn run(args: EncodeArgs) -> Result<()> {
    if args.batch == 0 || args.shard_size == 0 {
        bail!("--batch and --shard-size must be positive");
    }
    let pixels = args.vae == "none";
    if args.grey && !pixels {
        bail!("--grey applies to pixel shards (--vae none); a VAE takes RGB images");
    }
    let device = args.device.open()?;
    let Scan { classes: class_names, items } = scan(&args.images)?;
    let vae = if pixels {
        None
    } else {
        let vae_path = if Path::new(&args.vae).exists() {
            PathBuf::from(&args.vae)
        } else {
            crate::fetch::fetch_vae(&args.vae, Registry::load()?.vae(&args.vae)?)?
        };
        Some(Autoencoder::load(&vae_path, None, candle_core::DType::F32, &device)?)
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let classes_json = serde_json::to_string_pretty(&class_names)?;
    let classes_path = args.out.join("classes.json");
    maskdit_io::write_atomic(&classes_path, |file| std::io::Write::write_all(file, classes_json.as_bytes()))
        .context("cannot write classes.json")?;
    let bar = progress::bar(items.len() as u64, "encoding");
    let side = args.resolution as usize;
    for (shard_index, shard) in items.chunks(args.shard_size).enumerate() {
        let mut parts = Vec::with_capacity(shard.len().div_ceil(args.batch));
        for batch in shard.chunks(args.batch) {
            let mut images = Vec::with_capacity(batch.len());
            for (path, _) in batch {
                let img = image::open(path).with_context(|| format!("cannot read the image {}", path.display()))?;
                let cropped = image::DynamicImage::ImageRgb8(center_crop_adm(&img, args.resolution)?);
                images.push(match &vae {
                    Some(_) => from_image(&cropped, &device)?,
                    // Pixels stay u8: (C, H, W), grey as its luma.
                    None if args.grey => Tensor::from_vec(cropped.to_luma8().into_raw(), (1, side, side), &device)?,
                    None => Tensor::from_vec(cropped.to_rgb8().into_raw(), (side, side, 3), &device)?
                        .permute((2, 0, 1))?
                        .contiguous()?,
                });
            }
            let images = Tensor::stack(&images, 0)?;
            parts.push(match &vae {
                Some(vae) => vae.encode(&images)?.stacked()?,
                None => images,
            });
            bar.inc(batch.len() as u64);
        }
        let data = Tensor::cat(&parts, 0)?;
        let labels: Vec<usize> = shard.iter().map(|(_, l)| *l).collect();
        let name = if vae.is_some() { "moments" } else { "images" };
        write_shard(&args.out.join(format!("shard-{shard_index:05}.safetensors")), name, &data, &labels)?;
    }
    bar.finish_and_clear();
    eprintln!("encoded {} images of {} classes into {}", items.len(), class_names.len(), args.out.display());
    Ok(())
}
