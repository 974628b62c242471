//! Judges an MNIST model's samples over a grid of sampler settings, to choose its defaults.
//! Usage: cargo run --release -p maskdit-tests --example mnist_sweep -- FILE [STEPS,..] [CFG,..] [PER_CLASS] [LOW:HIGH,..]

use candle_core::{DType, Device};
use maskdit::{weights, WeightSet};
use maskdit_sampler::GuidanceInterval;
use maskdit_tests::mnist_judge::{judge_model, Judge};

fn list<T: std::str::FromStr>(arg: Option<&String>, default: &str) -> Vec<T> {
    arg.map(String::as_str).unwrap_or(default).split(',').map(|v| v.parse().ok().expect("a number")).collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = std::path::PathBuf::from(
        args.get(1).expect("usage: mnist_sweep FILE [STEPS,..] [CFG,..] [PER_CLASS] [LOW:HIGH,..]"),
    );
    let steps: Vec<usize> = list(args.get(2), "18");
    let cfgs: Vec<f64> = list(args.get(3), "1.0,1.5,2.0,3.0");
    let per_class: usize = args.get(4).map(|v| v.parse().expect("a number")).unwrap_or(20);
    // Guidance intervals `LOW:HIGH` (noise levels); `all` guides at every level.
    let intervals: Vec<Option<GuidanceInterval>> = args
        .get(5)
        .map(String::as_str)
        .unwrap_or("all")
        .split(',')
        .map(|v| (v != "all").then(|| v.parse().expect("an interval LOW:HIGH or `all`")))
        .collect();
    let config = weights::read_config(&path).unwrap().expect("a toolkit checkpoint (with its architecture)");
    let model = weights::load(&path, &config, WeightSet::Ema, DType::F32, &Device::Cpu).unwrap();
    let (judge, real_accuracy) = Judge::train();
    println!("judge reads {real_accuracy:.4} of held-out real digits");
    for &s in &steps {
        for &cfg in &cfgs {
            for &interval in &intervals {
                let v = judge_model(&judge, &model, s, cfg, interval, per_class);
                let range = interval.map_or("all".to_string(), |i| i.to_string());
                println!(
                    "steps {s:>3} cfg {cfg:>4.2} σ {range:>9}: accuracy {:.4}, feature distance {:.3} (real-vs-real {:.3})",
                    v.accuracy, v.distance, v.real_distance
                );
            }
        }
    }
}
