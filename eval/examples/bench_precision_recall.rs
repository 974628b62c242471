//! Times precision and recall of two sets of random 2048-d features (default 10,000 each):
//! `cargo run --release -p maskdit-eval --example bench_precision_recall -- [SAMPLES] [REFERENCE] [cpu|cuda]`.

use std::time::Instant;

use candle_core::{Device, Tensor};
use maskdit_eval::{precision_recall, FEATURE_DIMS};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let count = |i: usize| args.get(i).map_or(Ok(10_000), |a| a.parse::<usize>());
    let (samples, reference) = (count(0)?, count(1)?);
    let device = match args.get(2).map(String::as_str) {
        Some("cuda") => Device::new_cuda(0)?,
        _ => Device::Cpu,
    };
    // Pool features are non-negative averages of ReLU outputs: uniform draws stand in for them.
    let draw = |n: usize| -> candle_core::Result<Vec<f32>> {
        Tensor::rand(0f32, 1.0, (n, FEATURE_DIMS), &Device::Cpu)?.flatten_all()?.to_vec1()
    };
    let (a, b) = (draw(samples)?, draw(reference)?);
    let start = Instant::now();
    let result = precision_recall(&a, &b, FEATURE_DIMS, &device)?;
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{samples} samples × {reference} reference, {FEATURE_DIMS}-d, {device:?}: {seconds:.1} s \
         (precision {:.4}, recall {:.4})",
        result.precision, result.recall
    );
    Ok(())
}
