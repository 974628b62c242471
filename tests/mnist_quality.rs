//! Quality of the embedded MNIST model, judged by a classifier this test trains on real digits:
//! 20 seeds × 10 classes are sampled with the registry's default settings; at least 95% must be
//! read as the requested digit, and their classifier-feature statistics must be close to those
//! of real digits.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{linear, Linear, Optimizer, VarBuilder, VarMap};
use maskdit_sampler::{EdmOptions, Guided, SeededNoise};

fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Real digits in [−1, 1], `(N, 784)`, and labels.
fn digits() -> (Tensor, Vec<u32>) {
    let data = maskdit_tests::load(&workspace().join("data/mnist/digits.safetensors"));
    let images = maskdit_tests::get(&data, "images").to_dtype(DType::F32).unwrap();
    let n = images.dim(0).unwrap();
    let images = ((images.reshape((n, 784)).unwrap() / 127.5).unwrap() - 1.0).unwrap();
    let labels = maskdit_tests::get(&data, "labels").to_dtype(DType::U32).unwrap().to_vec1::<u32>().unwrap();
    (images, labels)
}

/// A two-layer perceptron: 784 → 256 (ReLU, the "features") → 10.
struct Judge {
    hidden: Linear,
    out: Linear,
}

impl Judge {
    fn features(&self, x: &Tensor) -> Tensor {
        self.hidden.forward(x).unwrap().relu().unwrap()
    }

    fn predict(&self, x: &Tensor) -> Vec<u32> {
        self.out.forward(&self.features(x)).unwrap().argmax(D::Minus1).unwrap().to_vec1::<u32>().unwrap()
    }
}

fn train_judge(images: &Tensor, labels: &[u32]) -> Judge {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let judge =
        Judge { hidden: linear(784, 256, vb.pp("hidden")).unwrap(), out: linear(256, 10, vb.pp("out")).unwrap() };
    let mut opt = candle_nn::AdamW::new(
        varmap.all_vars(),
        candle_nn::ParamsAdamW { lr: 1e-3, weight_decay: 1e-4, ..Default::default() },
    )
    .unwrap();
    let n = images.dim(0).unwrap();
    let targets = Tensor::new(labels, &Device::Cpu).unwrap();
    for _epoch in 0..8 {
        for start in (0..n).step_by(100) {
            let len = 100.min(n - start);
            let x = images.narrow(0, start, len).unwrap();
            let y = targets.narrow(0, start, len).unwrap();
            let logits = judge.out.forward(&judge.features(&x)).unwrap();
            let loss = candle_nn::loss::cross_entropy(&logits, &y).unwrap();
            opt.backward_step(&loss).unwrap();
        }
    }
    judge
}

fn accuracy(judge: &Judge, images: &Tensor, labels: &[u32]) -> f64 {
    let predicted = judge.predict(images);
    predicted.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / labels.len() as f64
}

/// Per-dimension mean and standard deviation of the judge's features.
fn feature_stats(judge: &Judge, images: &Tensor) -> (Vec<f32>, Vec<f32>) {
    let f = judge.features(images);
    let mean = f.mean(0).unwrap();
    let std = f.broadcast_sub(&mean).unwrap().sqr().unwrap().mean(0).unwrap().sqrt().unwrap();
    (mean.to_vec1().unwrap(), std.to_vec1().unwrap())
}

/// Diagonal Fréchet distance between two feature distributions.
fn frechet_diag(a: &(Vec<f32>, Vec<f32>), b: &(Vec<f32>, Vec<f32>)) -> f64 {
    a.0.iter().zip(&b.0).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>()
        + a.1.iter().zip(&b.1).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>()
}

#[test]
#[ignore = "the embedded model does not meet this bar yet (issue 7 is open); run with --ignored to measure it"]
fn embedded_model_draws_the_requested_digits() {
    let (images, labels) = digits();
    let n = images.dim(0).unwrap();
    let held_out = 1000;
    let judge = train_judge(&images.narrow(0, 0, n - held_out).unwrap(), &labels[..n - held_out]);
    let real = images.narrow(0, n - held_out, held_out).unwrap();
    let real_acc = accuracy(&judge, &real, &labels[n - held_out..]);
    assert!(real_acc > 0.95, "the judge itself reads only {real_acc:.3} of held-out real digits");

    let registry: toml::Value =
        toml::from_str(&std::fs::read_to_string(workspace().join("weights.toml")).unwrap()).unwrap();
    let entry = &registry["models"]["mnist"];
    let steps = entry["steps"].as_integer().unwrap() as usize;
    let cfg = entry["cfg"].as_float().unwrap();
    let bytes = std::fs::read(workspace().join("cli/assets/mnist.safetensors")).unwrap();
    let model = maskdit::checkpoint::load_bytes(&bytes, DType::F32, &Device::Cpu).unwrap();
    let guided = Guided::new(&model, cfg);
    let mut generated = Vec::new();
    let mut wanted = Vec::new();
    for class in 0..10u32 {
        let seeds: Vec<u64> = (0..20).map(|s| 1000 * class as u64 + s).collect();
        let mut noise = SeededNoise::new(&seeds);
        let latents = noise.latents(&[1, 28, 28], &Device::Cpu).unwrap();
        let onehot: Vec<f32> = (0..20).flat_map(|_| (0..10).map(|j| if j == class { 1.0 } else { 0.0 })).collect();
        let labels = Tensor::from_vec(onehot, (20, 10), &Device::Cpu).unwrap();
        let out = EdmOptions::heun(steps).sample(&guided, &latents, Some(&labels), &mut noise, &mut |_| {}).unwrap();
        generated.push(out.clamp(-1f32, 1f32).unwrap().reshape((20, 784)).unwrap());
        wanted.extend(std::iter::repeat_n(class, 20));
    }
    let generated = Tensor::cat(&generated, 0).unwrap();
    let acc = accuracy(&judge, &generated, &wanted);
    let real_a = real.narrow(0, 0, 200).unwrap();
    let real_b = real.narrow(0, 200, 200).unwrap();
    let fd_real = frechet_diag(&feature_stats(&judge, &real_a), &feature_stats(&judge, &real_b));
    let fd_gen = frechet_diag(&feature_stats(&judge, &generated), &feature_stats(&judge, &real_b));
    eprintln!(
        "judge accuracy on real held-out digits {real_acc:.4}; on 200 generated digits {acc:.4}; \
         diagonal feature Fréchet distance generated-vs-real {fd_gen:.3} (real-vs-real {fd_real:.3})"
    );
    assert!(acc >= 0.95, "only {:.1}% of generated digits are read as the requested class", 100.0 * acc);
    assert!(fd_gen <= 4.0 * fd_real, "generated digits' features are far from real ones: {fd_gen:.3} vs {fd_real:.3}");
}
