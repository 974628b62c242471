//! Diagnostic: follows one Euler sampling trajectory of an MNIST model (the sampler's per-step
//! callback) and prints, per noise level, how the denoised estimate looks (mean, fraction of mid-gray pixels) and how large the
//! implied noise is relative to sigma.
//! Usage: cargo run --release -p maskdit-tests --example sample_trace -- CHECKPOINT [STEPS] [ema|model]

use candle_core::{DType, Device, Tensor};
use maskdit::{weights, WeightSet};
use maskdit_sampler::{EdmOptions, SeededNoise, Solver};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = std::path::PathBuf::from(&args[1]);
    let steps: usize = args.get(2).map_or(18, |s| s.parse().unwrap());
    let config = weights::read_config(&path).unwrap().expect("a toolkit checkpoint");
    let set = if args.get(3).map(String::as_str) == Some("model") { WeightSet::Model } else { WeightSet::Ema };
    let model = weights::load(&path, &config, set, DType::F32, &Device::Cpu).unwrap();
    let n = 20;
    let labels = maskdit::one_hot((0..n).map(|i| i % 10), 10, &Device::Cpu).unwrap();
    let options = EdmOptions { solver: Solver::Euler, ..EdmOptions::heun(steps) };
    let mut noise = SeededNoise::new(&(0..n as u64).collect::<Vec<_>>());
    let latents = noise.latents(&[1, 28, 28], &Device::Cpu).unwrap();
    options
        .sample(&model, &latents, Some(&labels), &mut noise, &mut |step| {
            let (x, d, s) = (step.x, step.denoised, step.sigma);
            let v: Vec<f64> = d.flatten_all().unwrap().to_vec1().unwrap();
            let mid = v.iter().filter(|&&p| p > -0.75 && p < 0.75).count() as f64 / v.len() as f64;
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            let implied = (x - d).unwrap().sqr().unwrap().mean_all().unwrap().to_scalar::<f64>().unwrap().sqrt() / s;
            println!("sigma {s:>9.4}: D mean {mean:>7.4}, mid-gray {mid:.3}, |x - D| / sigma {implied:.3}");
            if let Ok(dir) = std::env::var("TRACE_DIR") {
                write_estimates(d, &format!("{dir}/sigma-{s:09.4}.pgm"));
            }
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
}

/// The first ten estimates side by side, as an 8-bit PGM.
fn write_estimates(denoised: &Tensor, path: &str) {
    let row = denoised.narrow(0, 0, 10).unwrap().squeeze(1).unwrap().permute((1, 0, 2)).unwrap();
    let pixels: Vec<u8> = row
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
        .iter()
        .map(|&p| ((p.clamp(-1.0, 1.0) + 1.0) * 127.5) as u8)
        .collect();
    let mut file = b"P5 280 28 255\n".to_vec();
    file.extend(pixels);
    std::fs::write(path, file).unwrap();
}
