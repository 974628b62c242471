//! `--device` and `--dtype` parsing.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};

/// `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        other => {
            let index = match other.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse::<usize>().ok())
                    .with_context(|| format!("unknown device `{other}`; use cpu, cuda or cuda:N"))?,
                None => bail!("unknown device `{other}`; use cpu, cuda or cuda:N"),
            };
            if !candle_core::utils::cuda_is_available() {
                bail!("this maskdit was built without CUDA; rebuild with `cargo build --release --features cuda`, or use --device cpu");
            }
            Device::new_cuda(index).with_context(|| format!("cannot open CUDA device {index}"))
        }
    }
}

/// `f32`, `f16` or `bf16`.
pub fn parse_dtype(name: &str) -> Result<DType> {
    match name {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        other => bail!("unknown dtype `{other}`; use f32, f16 or bf16"),
    }
}
