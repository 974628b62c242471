//! A registry model by name (the embedded MNIST model by default, so it runs offline) → one
//! image per class → a grid PNG. Usage: `cargo run -p maskdit-pipeline --example generate --
//! [MODEL] [OUT.png]`.

use std::ops::ControlFlow;

use candle_core::{DType, Device};
use maskdit::WeightSet;
use maskdit_pipeline::{load_model, load_vae, Decoder, Pipeline};
use maskdit_registry::{Quiet, Registry};
use maskdit_sampler::{EdmOptions, Sampler};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = Registry::load()?;
    let name = std::env::args().nth(1).unwrap_or_else(|| registry.default_model.clone());
    let out = std::env::args().nth(2).unwrap_or_else(|| "grid.png".into());
    let device = Device::Cpu;
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
    println!("{name}: {} images, one per class, in {out}", images.len());
    Ok(())
}
