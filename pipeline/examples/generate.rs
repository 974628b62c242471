//! A registry model by name (the embedded MNIST model by default, so it runs offline) → one
//! image per class → a grid PNG, and the FID statistics of those images beside it (`.npz`, as
//! `maskdit fid-stats` writes them). Usage: `cargo run -p maskdit-pipeline --example generate --
//! [MODEL] [OUT.png] [INCEPTION]`; without INCEPTION the FID Inception weights come from the
//! registry's cache (`maskdit download inception-fid`).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use maskdit::WeightSet;
use maskdit_eval::{image_tensor, FidInception, SetFeatures};
use maskdit_pipeline::{load_model, load_vae, Decoder, Pipeline};
use maskdit_registry::{fetch::inception_weights, Quiet, Registry};
use maskdit_sampler::{EdmOptions, Sampler};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (registry, device) = (Registry::load()?, Device::Cpu);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args.first().cloned().unwrap_or_else(|| registry.default_model.clone());
    let out = PathBuf::from(args.get(1).map_or("grid.png", String::as_str));
    let found = load_model(&registry, &name, WeightSet::Ema, DType::F32, &device, &mut Quiet)?;
    let decoder = match &found.vae {
        Some(vae) => Decoder::Vae(load_vae(&registry, vae, DType::F32, &device, &mut Quiet)?.into()),
        None => Decoder::Pixels,
    };
    let classes: Vec<usize> = (0..found.model.config().num_classes.clamp(1, 10)).collect();
    let sampler = Sampler::Edm(EdmOptions::heun(found.steps));
    let pipeline = Pipeline::new(found.model, decoder, sampler).with_guidance(found.guidance, found.interval)?;
    let seeds: Vec<u64> = (0..classes.len() as u64).collect();
    let images = pipeline.images(&seeds, Some(&classes), &mut |_| ControlFlow::Continue(()))?;
    let side = pipeline.image_side() as u32;
    let mut grid = image::RgbImage::new(side * images.len() as u32, side);
    for (i, picture) in images.iter().enumerate() {
        image::imageops::replace(&mut grid, &picture.to_rgb8(), i as i64 * side as i64, 0);
    }
    grid.save(&out)?;
    let inception = FidInception::load(&inception_weights(args.get(2).map(Path::new))?, &device)?;
    let mut features = SetFeatures::default();
    for picture in &images {
        inception.extend(&mut features, &image_tensor(picture)?)?;
    }
    features.evaluation_file(false)?.write(&out.with_extension("npz"))?;
    println!("{name}: {} images, one per class, in {}, FID statistics beside it", images.len(), out.display());
    Ok(())
}
