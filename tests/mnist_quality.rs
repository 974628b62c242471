//! Quality of the embedded MNIST model, judged by a classifier trained on real digits: 20
//! seeds × 10 classes sampled with the registry's default settings; at least 97% must be read
//! as the requested digit, and their features must sit within 1.3× the distance between two
//! sets of real digits.

use candle_core::{DType, Device};
use maskdit_sampler::GuidanceInterval;
use maskdit_tests::mnist_judge::{judge_model, Judge};

fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

#[test]
fn embedded_model_draws_the_requested_digits() {
    let started = std::time::Instant::now();
    let (judge, real_accuracy) = Judge::train();
    eprintln!("judge trained in {:.1} s", started.elapsed().as_secs_f64());
    assert!(real_accuracy > 0.95, "the judge itself reads only {real_accuracy:.3} of held-out real digits");

    let registry: toml::Value =
        toml::from_str(&std::fs::read_to_string(workspace().join("weights.toml")).unwrap()).unwrap();
    let entry = &registry["models"]["mnist"];
    let steps = entry["steps"].as_integer().unwrap() as usize;
    let cfg = entry["cfg"].as_float().unwrap();
    let interval = entry.get("guidance_interval").map(|bounds| {
        let bound = |i: usize| bounds[i].as_float().unwrap();
        GuidanceInterval::new(bound(0), bound(1)).unwrap()
    });
    let bytes = std::fs::read(workspace().join("registry/assets/mnist.safetensors")).unwrap();
    let model = maskdit::weights::load_bytes(&bytes, DType::F32, &Device::Cpu).unwrap();
    let started = std::time::Instant::now();
    let verdict = judge_model(&judge, &model, steps, cfg, interval, 20);
    eprintln!("200 digits sampled and judged in {:.1} s", started.elapsed().as_secs_f64());
    eprintln!(
        "judge accuracy on real held-out digits {real_accuracy:.4}; on 200 generated digits {:.4}; diagonal \
         feature Fréchet distance generated-vs-real {:.3} (real-vs-real {:.3})",
        verdict.accuracy, verdict.distance, verdict.real_distance
    );
    assert!(
        verdict.accuracy >= 0.97,
        "only {:.1}% of generated digits are read as the requested class",
        100.0 * verdict.accuracy
    );
    assert!(
        verdict.distance <= 1.3 * verdict.real_distance,
        "generated digits' features are far from real ones: {:.3} vs {:.3}",
        verdict.distance,
        verdict.real_distance
    );
}
