//! `maskdit encode`: an image folder (one subfolder per class, or a flat folder of images
//! without labels) → latent shards for training, or pixel shards for pixel-space models
//! (`--vae none`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use clap::Args;
use maskdit_train::data::{write_shard, ShardManifest, MANIFEST_FILE};
use maskdit_vae::image::{center_crop_adm, from_image};

use maskdit_registry::Registry;

use crate::runtime::device::DeviceChoice;
use crate::runtime::progress::{self, DownloadBar};

/// Options of `maskdit encode`.
#[derive(Debug, Args)]
pub struct EncodeArgs {
    /// Image folder: one subfolder per class (classes numbered in name order), or the images
    /// themselves (data without labels, for unconditional models).
    #[arg(long)]
    images: PathBuf,
    /// Output folder for `shard-NNNNN.safetensors` files and (with classes) `classes.json`.
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
    #[arg(long, default_value_t = 4096, value_parser = crate::runtime::bounds::batch)]
    shard_size: usize,
    /// Replace the encoded set already in --out (its shards, classes.json and manifest);
    /// without it a non-empty --out is refused.
    #[arg(long)]
    overwrite: bool,
    /// Images encoded at once.
    #[arg(long, default_value_t = 8, value_parser = crate::runtime::bounds::batch)]
    batch: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

/// The largest `--resolution` accepted (a 4096² RGB crop is 48 MiB per image before encoding).
const MAX_RESOLUTION: u32 = 4096;
/// The class names file of a labeled set.
const CLASSES_FILE: &str = "classes.json";

/// Whether `name` is a file of an encoded set (shards, class names, manifest).
fn is_set_file(name: &str) -> bool {
    (name.starts_with("shard-") && name.ends_with(".safetensors")) || name == CLASSES_FILE || name == MANIFEST_FILE
}

/// Refuses an --out that holds anything but the lock (or, with `overwrite`, anything but an
/// encoded set, whose files are then removed, manifest first).
fn clear_output(out: &Path, overwrite: bool) -> Result<()> {
    let mut held: Vec<String> = std::fs::read_dir(out)
        .with_context(|| format!("cannot read {}", out.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|name| name != maskdit_io::LOCK_FILE)
        .collect();
    if held.is_empty() {
        return Ok(());
    }
    if !overwrite {
        bail!(
            "{} is not empty ({} entries); encode into an empty folder, or pass --overwrite to replace the set in it",
            out.display(),
            held.len()
        );
    }
    if let Some(other) = held.iter().find(|name| !is_set_file(name)) {
        bail!(
            "{} holds {}, which is not part of an encoded set; --overwrite only replaces a set: choose another --out",
            out.display(),
            maskdit_io::printable(other)
        );
    }
    held.sort_by_key(|name| name != MANIFEST_FILE);
    for name in held {
        let path = out.join(&name);
        std::fs::remove_file(&path).with_context(|| format!("cannot remove the old {}", path.display()))?;
    }
    Ok(())
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_lowercase().as_str(), "png" | "jpg" | "jpeg" | "jpe"))
}

/// Class names (in name order; empty for a flat folder) and every image with its class index
/// (none in a flat folder).
struct Scan {
    classes: Vec<String>,
    items: Vec<(PathBuf, Option<usize>)>,
}

/// The images of a folder, sorted by name.
fn images_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the image folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_image(p))
        .collect();
    files.sort();
    Ok(files)
}

/// The images of each class subfolder, classes in name order; or the images of a flat folder.
fn scan(root: &Path) -> Result<Scan> {
    let mut classes: Vec<PathBuf> = std::fs::read_dir(root)
        .with_context(|| format!("cannot read the image folder {}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    let flat = images_in(root)?;
    let items: Vec<(PathBuf, Option<usize>)> = match (classes.is_empty(), flat.is_empty()) {
        (true, _) => flat.into_iter().map(|f| (f, None)).collect(),
        (false, true) => {
            let mut items = Vec::new();
            for (label, dir) in classes.iter().enumerate() {
                items.extend(images_in(dir)?.into_iter().map(|f| (f, Some(label))));
            }
            items
        }
        (false, false) => bail!(
            "{} holds both images and subfolders: put the images of each class in its own subfolder, or all images \
             (without classes) directly in the folder",
            root.display()
        ),
    };
    if items.is_empty() {
        bail!("no PNG or JPEG images in {} or its class subfolders", root.display());
    }
    let labeled = items.first().is_some_and(|(_, label)| label.is_some());
    let names: Vec<String> = if labeled {
        classes.iter().map(|c| c.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()).collect()
    } else {
        Vec::new()
    };
    maskdit_registry::labels::check_distinct(&names)
        .with_context(|| format!("the class folders of {}", root.display()))?;
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
    if args.resolution == 0 || args.resolution > MAX_RESOLUTION {
        bail!("--resolution must be between 1 and {MAX_RESOLUTION}");
    }
    crate::runtime::outputs::refuse_overwriting_inputs("--out", &args.out, [args.images.as_path()])?;
    let device = args.device.open()?;
    let Scan { classes: class_names, items } = scan(&args.images)?;
    let vae = if pixels {
        None
    } else {
        let registry = Registry::load()?;
        let dtype = candle_core::DType::F32;
        Some(maskdit_pipeline::load_vae(&registry, &args.vae, dtype, &device, &mut DownloadBar::default())?)
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let _owner = maskdit_io::FolderLock::acquire(&args.out, maskdit_io::Access::Exclusive)?;
    clear_output(&args.out, args.overwrite)?;
    ShardManifest::begin(&args.out)?;
    let classes_path = args.out.join(CLASSES_FILE);
    if !class_names.is_empty() {
        let classes_json = serde_json::to_string_pretty(&class_names)?;
        maskdit_io::write_atomic(&classes_path, |file| std::io::Write::write_all(file, classes_json.as_bytes()))
            .context("cannot write classes.json")?;
    }
    let bar = progress::bar(items.len() as u64, "encoding");
    let side = args.resolution as usize;
    let mut manifest = Vec::new();
    for (shard_index, shard) in items.chunks(args.shard_size).enumerate() {
        let mut parts = Vec::with_capacity(shard.len().div_ceil(args.batch));
        for batch in shard.chunks(args.batch) {
            let mut images = Vec::with_capacity(batch.len());
            for (path, _) in batch {
                let img = maskdit_io::open_image(path)
                    .with_context(|| format!("cannot read the image {}", path.display()))?;
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
        let labels: Option<Vec<usize>> = shard.iter().map(|(_, l)| *l).collect();
        let name = if vae.is_some() { "moments" } else { "images" };
        let path = args.out.join(format!("shard-{shard_index:05}.safetensors"));
        write_shard(&path, name, &data, labels.as_deref())?;
        manifest.push(ShardManifest::entry(&path, shard.len())?);
    }
    // Last: a set without its manifest is partial, and training refuses it.
    ShardManifest::write(&args.out, manifest)?;
    bar.finish_and_clear();
    match class_names.len() {
        0 => eprintln!("encoded {} images without labels into {}", items.len(), args.out.display()),
        n => eprintln!("encoded {} images of {n} classes into {}", items.len(), args.out.display()),
    }
    Ok(())
}
