//! Diagnostic: follows one Euler sampling trajectory of an MNIST model and prints, per noise
//! level, how the denoised estimate looks (mean, fraction of mid-gray pixels) and how large the
//! implied noise is relative to sigma.
//! Usage: cargo run --release -p maskdit-tests --example sample_trace -- CHECKPOINT [STEPS] [ema|model]

use candle_core::{DType, Device, Tensor};
use maskdit::{checkpoint, WeightSet};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = std::path::PathBuf::from(&args[1]);
    let steps: usize = args.get(2).map_or(18, |s| s.parse().unwrap());
    let config = checkpoint::read_config(&path).unwrap().expect("a toolkit checkpoint");
    let set = if args.get(3).map(String::as_str) == Some("model") { WeightSet::Model } else { WeightSet::Ema };
    let model = checkpoint::load(&path, &config, set, DType::F32, &Device::Cpu).unwrap();
    let n = 20;
    let onehot: Vec<f32> = (0..n).flat_map(|i| (0..10).map(move |j| if j == i % 10 { 1.0 } else { 0.0 })).collect();
    let labels = Tensor::from_vec(onehot, (n, 10), &Device::Cpu).unwrap();
    let (lo, hi, rho) = (0.002f64, 80f64, 7f64);
    let sigmas: Vec<f64> = (0..steps)
        .map(|i| {
            let t = i as f64 / (steps - 1) as f64;
            (hi.powf(1.0 / rho) + t * (lo.powf(1.0 / rho) - hi.powf(1.0 / rho))).powf(rho)
        })
        .chain([0.0])
        .collect();
    let mut x = (Tensor::randn(0f32, 1.0, (n, 1, 28, 28), &Device::Cpu).unwrap() * hi).unwrap();
    for w in sigmas.windows(2) {
        let (s, next) = (w[0], w[1]);
        let sigma = Tensor::full(s as f32, n, &Device::Cpu).unwrap();
        let d = model.denoise(&x, &sigma, Some(&labels)).unwrap();
        let v: Vec<f32> = d.flatten_all().unwrap().to_vec1().unwrap();
        let mid = v.iter().filter(|&&p| p > -0.75 && p < 0.75).count() as f64 / v.len() as f64;
        let mean = v.iter().map(|&p| p as f64).sum::<f64>() / v.len() as f64;
        let implied =
            ((&x - &d).unwrap().sqr().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap() as f64).sqrt() / s;
        println!("sigma {s:>9.4}: D mean {mean:>7.4}, mid-gray {mid:.3}, |x - D| / sigma {implied:.3}");
        if let Ok(dir) = std::env::var("TRACE_DIR") {
            // The first ten estimates side by side, as an 8-bit PGM.
            let row =
                d.narrow(0, 0, 10).unwrap().squeeze(1).unwrap().permute((1, 0, 2)).unwrap().reshape((28, 280)).unwrap();
            let pixels: Vec<u8> = row
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|&p| ((p.clamp(-1.0, 1.0) + 1.0) * 127.5) as u8)
                .collect();
            let mut file = b"P5 280 28 255\n".to_vec();
            file.extend(pixels);
            std::fs::write(format!("{dir}/sigma-{s:09.4}.pgm"), file).unwrap();
        }
        x = (&d + ((&x - &d).unwrap() * (next / s)).unwrap()).unwrap();
    }
}
