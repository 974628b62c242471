//! How well a model denoises real MNIST digits at several noise levels (a diagnostic).
//! Usage: cargo run --release -p maskdit-tests --example denoise_probe -- CHECKPOINT [ema|model]

use candle_core::{DType, Device, Tensor};
use maskdit::{weights, WeightSet};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = std::path::PathBuf::from(&args[1]);
    let set = if args.get(2).map(String::as_str) == Some("model") { WeightSet::Model } else { WeightSet::Ema };
    let config = weights::read_config(&path).unwrap().expect("a toolkit checkpoint");
    let model = weights::load(&path, &config, set, DType::F32, &Device::Cpu).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let data = candle_core::safetensors::load(root.join("data/mnist/digits.safetensors"), &Device::Cpu).unwrap();
    let x0 = ((data["images"].narrow(0, 0, 64).unwrap().to_dtype(DType::F32).unwrap() / 127.5).unwrap() - 1.0)
        .unwrap()
        .unsqueeze(1)
        .unwrap();
    let labels: Vec<u8> = data["labels"].narrow(0, 0, 64).unwrap().to_vec1().unwrap();
    let y = maskdit::one_hot(labels.iter().map(|&l| l as usize), 10, &Device::Cpu).unwrap();
    // The same at a high noise level with the wrong class and with no class: conditioning at work.
    let wrong = maskdit::one_hot(labels.iter().map(|&l| (l as usize + 5) % 10), 10, &Device::Cpu).unwrap();
    let null = Tensor::zeros((64, 10), DType::F32, &Device::Cpu).unwrap();
    let mut draw = maskdit_tests::SeededTensors::new(0);
    for sigma in [3.0f32, 10.0] {
        let noise = draw.normal(0.0, 1.0, x0.dims());
        let x = (&x0 + (noise * sigma as f64).unwrap()).unwrap();
        let s = Tensor::full(sigma, 64, &Device::Cpu).unwrap();
        let mse = |labels: &Tensor| {
            let d = model.denoise(&x, &s, Some(labels)).unwrap();
            (d - &x0).unwrap().sqr().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap()
        };
        println!(
            "sigma {sigma:>6}: mse with the right class {:.5}, a wrong class {:.5}, no class {:.5}",
            mse(&y),
            mse(&wrong),
            mse(&null)
        );
    }
    for sigma in [0.02f32, 0.1, 0.3, 1.0, 3.0, 10.0] {
        let noise = draw.normal(0.0, 1.0, x0.dims());
        let x = (&x0 + (noise * sigma as f64).unwrap()).unwrap();
        let s = Tensor::full(sigma, 64, &Device::Cpu).unwrap();
        let d = model.denoise(&x, &s, Some(&y)).unwrap();
        let mse = (d - &x0).unwrap().sqr().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap();
        let c_skip = 0.25 / (sigma * sigma + 0.25);
        let base = ((&x * c_skip as f64).unwrap() - &x0)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        println!("sigma {sigma:>6}: mse {mse:.5} (noisy input {:.5}, skip-only {base:.5})", sigma * sigma);
    }
}
