//! Helpers for the workspace's tests.
//!
//! candle cannot seed its CPU random draws (`Tensor::randn`, `Tensor::rand`), so a test that
//! uses them reads different inputs on every run and a tolerance near the edge fails now and
//! then. Tests draw their inputs from a [`SeededTensors`] instead: the same seed gives the same
//! tensors on every run and every machine.
//!
//! The helpers panic on failure (they exist for tests, where a panic is the report).

use candle_core::{DType, Device, Shape, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// A generator of random f32 tensors on the CPU, seeded by the test that owns it.
#[derive(Debug, Clone)]
pub struct SeededTensors {
    rng: ChaCha8Rng,
}

impl SeededTensors {
    /// A generator whose draws depend on `seed` only.
    pub fn new(seed: u64) -> Self {
        Self { rng: ChaCha8Rng::seed_from_u64(seed) }
    }

    /// Normal values with the given mean and standard deviation.
    pub fn normal(&mut self, mean: f32, std: f32, shape: impl Into<Shape>) -> Tensor {
        let shape = shape.into();
        let values: Vec<f32> = (0..shape.elem_count())
            .map(|_| {
                let z: f32 = StandardNormal.sample(&mut self.rng);
                mean + std * z
            })
            .collect();
        Tensor::from_vec(values, shape, &Device::Cpu).expect("a tensor of the drawn values")
    }

    /// Values uniform in `[low, high)`.
    pub fn uniform(&mut self, low: f32, high: f32, shape: impl Into<Shape>) -> Tensor {
        let shape = shape.into();
        let values: Vec<f32> = (0..shape.elem_count()).map(|_| self.rng.random_range(low..high)).collect();
        Tensor::from_vec(values, shape, &Device::Cpu).expect("a tensor of the drawn values")
    }
}

/// ‖got − want‖₂ / ‖want‖₂ in f64 (the absolute norm when `want` is zero); any device, any
/// float dtype. Panics when the shapes differ.
pub fn relative_l2(got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(got.dims(), want.dims(), "shape mismatch");
    let on_cpu = |t: &Tensor| t.to_device(&Device::Cpu)?.to_dtype(DType::F64)?.flatten_all();
    let (got, want) = (on_cpu(got).expect("f64 copy"), on_cpu(want).expect("f64 copy"));
    let diff = (&got - &want).and_then(|d| d.sqr()?.sum_all()?.to_scalar::<f64>()).expect("norm").sqrt();
    let norm = want.sqr().and_then(|d| d.sum_all()?.to_scalar::<f64>()).expect("norm").sqrt();
    if norm == 0.0 {
        diff
    } else {
        diff / norm
    }
}

/// The worst value and the given quantile (`0.999` for the 99.9th percentile) of a measured
/// spread, for recording the budgets of low-precision comparisons.
pub fn worst_and_quantile(values: &[f64], quantile: f64) -> (f64, f64) {
    assert!(!values.is_empty(), "no values measured");
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let index = ((sorted.len() - 1) as f64 * quantile).round() as usize;
    (sorted[sorted.len() - 1], sorted[index])
}

/// The bytes of a PNG whose header declares `width`×`height` grey pixels and which holds no
/// pixel data: a small file that lies about its size, for tests of size limits.
pub fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let chunk = |kind: &[u8; 4], data: &[u8]| -> Vec<u8> {
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
        out
    };
    let mut header = width.to_be_bytes().to_vec();
    header.extend_from_slice(&height.to_be_bytes());
    // Bit depth 8, grey, deflate, adaptive filtering, no interlace.
    header.extend_from_slice(&[8, 0, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &header));
    // Decoders read the header up to the first data chunk: an empty one.
    png.extend(chunk(b"IDAT", &[]));
    png.extend(chunk(b"IEND", &[]));
    png
}

/// PNG's CRC-32 (IEEE 802.3), bit by bit.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in bytes {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_tensors_other_seed_other_tensors() {
        let draw = |seed| SeededTensors::new(seed).normal(0.0, 1.0, (4, 5)).to_vec2::<f32>().unwrap();
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
        let u = SeededTensors::new(1).uniform(-1.0, 2.0, 1000).to_vec1::<f32>().unwrap();
        assert!(u.iter().all(|&v| (-1.0..2.0).contains(&v)));
    }

    #[test]
    fn normal_draws_have_the_asked_moments() {
        let x = SeededTensors::new(9).normal(2.0, 0.5, 100_000).to_vec1::<f32>().unwrap();
        let mean = x.iter().sum::<f32>() / x.len() as f32;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / x.len() as f32;
        assert!((mean - 2.0).abs() < 0.01 && (var.sqrt() - 0.5).abs() < 0.01, "mean {mean}, std {}", var.sqrt());
    }

    #[test]
    fn relative_l2_and_quantiles() {
        let a = Tensor::new(&[3f32, 4.0], &Device::Cpu).unwrap();
        let z = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(relative_l2(&z, &a), 1.0);
        assert_eq!(relative_l2(&a, &z), 5.0);
        let values: Vec<f64> = (0..=1000).map(f64::from).collect();
        assert_eq!(worst_and_quantile(&values, 0.999), (1000.0, 999.0));
    }
}
