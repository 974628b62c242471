//! A judge of generated MNIST digits: a classifier trained on real digits, the accuracy with
//! which it reads samples as their requested class, and a Fréchet distance of its features.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{linear, Linear, Optimizer, VarBuilder, VarMap};
use maskdit_sampler::{Denoiser, EdmOptions, GuidanceInterval, Guided, SeededNoise};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

/// Digits held back from the judge's training (for its own accuracy and the real-vs-real
/// feature distance).
pub const HELD_OUT: usize = 1000;

fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// The repository's real digits in [−1, 1], `(N, 784)`, and their labels.
pub fn digits() -> (Tensor, Vec<u32>) {
    let data = crate::load(&workspace().join("data/mnist/digits.safetensors"));
    let images = crate::get(&data, "images").to_dtype(DType::F32).unwrap();
    let n = images.dim(0).unwrap();
    let images = ((images.reshape((n, 784)).unwrap() / 127.5).unwrap() - 1.0).unwrap();
    let labels = crate::get(&data, "labels").to_dtype(DType::U32).unwrap().to_vec1::<u32>().unwrap();
    (images, labels)
}

/// A two-layer perceptron: 784 → 512 (ReLU, the "features") → 10.
pub struct Judge {
    hidden: Linear,
    out: Linear,
}

impl Judge {
    /// Trains a judge (12 epochs of AdamW over shuffled mini-batches of 100) on all digits but
    /// the last [`HELD_OUT`]; returns it with its accuracy on those.
    pub fn train() -> (Self, f64) {
        let (images, labels) = digits();
        let n = images.dim(0).unwrap() - HELD_OUT;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let judge =
            Judge { hidden: linear(784, 512, vb.pp("hidden")).unwrap(), out: linear(512, 10, vb.pp("out")).unwrap() };
        let mut rng = ChaCha12Rng::seed_from_u64(7);
        // A seeded initialisation (candle's draws from an unseeded generator): uniform weights
        // of bound 1/√fan_in, zero biases, in name order.
        let mut vars: Vec<(String, candle_core::Var)> =
            varmap.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, var) in &vars {
            let dims = var.dims().to_vec();
            let bound = if dims.len() == 2 { 1.0 / (dims[1] as f32).sqrt() } else { 0.0 };
            let values: Vec<f32> = (0..var.elem_count()).map(|_| bound * (2.0 * rng.random::<f32>() - 1.0)).collect();
            var.set(&Tensor::from_vec(values, dims, &Device::Cpu).unwrap()).unwrap();
        }
        let params = candle_nn::ParamsAdamW { lr: 1e-3, weight_decay: 1e-4, ..Default::default() };
        let mut opt = candle_nn::AdamW::new(varmap.all_vars(), params).unwrap();
        let targets = Tensor::new(&labels[..n], &Device::Cpu).unwrap();
        let mut order: Vec<u32> = (0..n as u32).collect();
        for epoch in 0..12 {
            if epoch == 8 {
                opt.set_learning_rate(2e-4);
            }
            order.shuffle(&mut rng);
            for batch in order.chunks(100) {
                let ids = Tensor::new(batch, &Device::Cpu).unwrap();
                let x = images.index_select(&ids, 0).unwrap();
                let logits = judge.out.forward(&judge.features(&x)).unwrap();
                let loss = candle_nn::loss::cross_entropy(&logits, &targets.index_select(&ids, 0).unwrap()).unwrap();
                opt.backward_step(&loss).unwrap();
            }
        }
        let accuracy = judge.accuracy(&images.narrow(0, n, HELD_OUT).unwrap(), &labels[n..]);
        (judge, accuracy)
    }

    fn features(&self, x: &Tensor) -> Tensor {
        self.hidden.forward(x).unwrap().relu().unwrap()
    }

    /// The fraction of `images` `(N, 784)` read as their `labels`.
    pub fn accuracy(&self, images: &Tensor, labels: &[u32]) -> f64 {
        let predicted = self.out.forward(&self.features(images)).unwrap().argmax(D::Minus1).unwrap();
        let predicted = predicted.to_vec1::<u32>().unwrap();
        predicted.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / labels.len() as f64
    }

    /// Diagonal Fréchet distance between the judge's feature distributions of two image sets:
    /// squared differences of per-feature means plus those of per-feature standard deviations.
    pub fn feature_distance(&self, a: &Tensor, b: &Tensor) -> f64 {
        let stats = |x: &Tensor| {
            let f = self.features(x);
            let mean = f.mean(0).unwrap();
            let std = f.broadcast_sub(&mean).unwrap().sqr().unwrap().mean(0).unwrap().sqrt().unwrap();
            (mean.to_vec1::<f32>().unwrap(), std.to_vec1::<f32>().unwrap())
        };
        let (a, b) = (stats(a), stats(b));
        let squares = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| ((p - q) as f64).powi(2)).sum::<f64>();
        squares(&a.0, &b.0) + squares(&a.1, &b.1)
    }
}

/// How a model's samples fare with a judge.
#[derive(Debug, Clone, Copy)]
pub struct Verdict {
    /// Fraction of samples read as their requested class.
    pub accuracy: f64,
    /// Feature distance of the samples to 200 held-out real digits.
    pub distance: f64,
    /// The same distance between two sets of 200 held-out real digits.
    pub real_distance: f64,
}

/// Samples `per_class` seeds of each of the 10 classes (seeds `1000·class + s`) with the EDM
/// Heun sampler at `steps` and guidance `cfg` (inside `interval` only, when given), and judges
/// them. All samples are drawn in one batch: each image depends on its seed only, and one batch
/// makes far fewer, larger calls.
pub fn judge_model(
    judge: &Judge,
    model: &dyn Denoiser,
    steps: usize,
    cfg: f64,
    interval: Option<GuidanceInterval>,
    per_class: usize,
) -> Verdict {
    let guided = Guided::new(model, cfg).with_interval(interval);
    let wanted: Vec<u32> = (0..10u32).flat_map(|class| std::iter::repeat_n(class, per_class)).collect();
    let seeds: Vec<u64> = (0..10u64).flat_map(|class| (0..per_class as u64).map(move |s| 1000 * class + s)).collect();
    let mut noise = SeededNoise::new(&seeds);
    let latents = noise.latents(&[1, 28, 28], &Device::Cpu).unwrap();
    let labels = maskdit::one_hot(wanted.iter().map(|&c| c as usize), 10, &Device::Cpu).unwrap();
    let out = EdmOptions::heun(steps)
        .sample(&guided, &latents, Some(&labels), &mut noise, &mut |_| std::ops::ControlFlow::Continue(()))
        .unwrap();
    let generated = out.clamp(-1f32, 1f32).unwrap().reshape((seeds.len(), 784)).unwrap();
    let (images, _) = digits();
    let n = images.dim(0).unwrap();
    let (real_a, real_b) = (images.narrow(0, n - 400, 200).unwrap(), images.narrow(0, n - 200, 200).unwrap());
    Verdict {
        accuracy: judge.accuracy(&generated, &wanted),
        distance: judge.feature_distance(&generated, &real_b),
        real_distance: judge.feature_distance(&real_a, &real_b),
    }
}
