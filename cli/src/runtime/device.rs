//! The `--device` and `--dtype` choices.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};

/// Where to compute: `cpu`, `cuda` or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The CPU.
    #[default]
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let unknown = || format!("unknown device `{text}`; use cpu, cuda or cuda:N");
        match text {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => {
                let index = other.strip_prefix("cuda:").ok_or_else(unknown)?;
                index.parse().map(Self::Cuda).map_err(|_| unknown())
            }
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(index) => write!(f, "cuda:{index}"),
        }
    }
}

impl DeviceChoice {
    /// Opens the device; a CUDA device keeps the memory it frees in its pool between steps.
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(index) => {
                if !candle_core::utils::cuda_is_available() {
                    bail!(
                        "this maskdit was built without CUDA; rebuild with `cargo build --release --features cuda`, \
                         or use --device cpu"
                    );
                }
                let device = Device::new_cuda(index).with_context(|| format!("cannot open CUDA device {index}"))?;
                // Memory freed in one step is reused by the next instead of mapped again.
                maskdit_kernels::memory_pool::keep_memory_pool(&device)
                    .with_context(|| format!("cannot configure the memory pool of CUDA device {index}"))?;
                Ok(device)
            }
        }
    }
}

/// The most memory the CUDA device's pool has held (since the start, or since
/// [`maskdit_kernels::memory_pool::reset_peak_memory`]), in MiB; `None` on the CPU.
pub fn peak_device_mib(device: &Device) -> Result<Option<f64>> {
    let peak = maskdit_kernels::memory_pool::peak_memory(device).context("cannot read the device's memory pool")?;
    Ok(peak.map(|bytes| bytes as f64 / (1u64 << 20) as f64))
}

/// Number format of the weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DTypeChoice {
    /// 32-bit floats.
    #[default]
    F32,
    /// 16-bit floats.
    F16,
    /// bfloat16.
    Bf16,
}

impl std::fmt::Display for DTypeChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.dtype().as_str())
    }
}

impl DTypeChoice {
    /// The candle dtype.
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
            Self::Bf16 => DType::BF16,
        }
    }
}

/// The devices of a training run's ranks: `cpu`, `cuda` (local rank r on GPU r), `cuda:N`, or
/// a list such as `cuda:0,2` (local rank r on the r-th GPU listed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RankDevices {
    /// Every rank on the CPU.
    Cpu,
    /// Local rank r on CUDA device r.
    CudaByRank,
    /// Local rank r on the r-th listed CUDA device.
    Cuda(Vec<usize>),
}

impl std::str::FromStr for RankDevices {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let unknown = || format!("unknown device `{text}`; use cpu, cuda, cuda:N or cuda:N,M,…");
        match text {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::CudaByRank),
            other => {
                let list = other.strip_prefix("cuda:").ok_or_else(unknown)?;
                let ids = list.split(',').map(|i| i.trim().parse()).collect::<std::result::Result<Vec<usize>, _>>();
                let ids = ids.map_err(|_| unknown())?;
                let mut sorted = ids.clone();
                sorted.sort_unstable();
                sorted.dedup();
                if sorted.len() != ids.len() {
                    return Err(format!("`{text}` names a GPU twice; each rank needs a GPU of its own"));
                }
                Ok(Self::Cuda(ids))
            }
        }
    }
}

impl RankDevices {
    /// Whether the ranks compute on the CPU.
    pub fn is_cpu(&self) -> bool {
        *self == Self::Cpu
    }

    /// Number of GPUs listed (`None` unless a list was given).
    pub fn listed(&self) -> Option<usize> {
        match self {
            Self::Cuda(ids) => Some(ids.len()),
            _ => None,
        }
    }

    /// The device of local rank `local_rank`.
    pub fn for_local_rank(&self, local_rank: usize) -> Result<DeviceChoice> {
        match self {
            Self::Cpu => Ok(DeviceChoice::Cpu),
            Self::CudaByRank => Ok(DeviceChoice::Cuda(local_rank)),
            Self::Cuda(ids) => match ids.get(local_rank) {
                Some(&id) => Ok(DeviceChoice::Cuda(id)),
                None => bail!(
                    "local rank {local_rank} has no GPU: --device lists {} (one per rank on this machine is needed)",
                    ids.len()
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_devices_follow_the_local_rank() -> anyhow::Result<()> {
        let cuda: RankDevices = "cuda".parse().map_err(anyhow::Error::msg)?;
        assert_eq!(cuda.for_local_rank(3)?, DeviceChoice::Cuda(3));
        let listed: RankDevices = "cuda:0,2".parse().map_err(anyhow::Error::msg)?;
        assert_eq!(listed.for_local_rank(1)?, DeviceChoice::Cuda(2));
        assert!(listed.for_local_rank(2).is_err());
        let cpu: RankDevices = "cpu".parse().map_err(anyhow::Error::msg)?;
        assert_eq!(cpu.for_local_rank(5)?, DeviceChoice::Cpu);
        assert!("cuda:1,1".parse::<RankDevices>().is_err());
        assert!("gpu".parse::<RankDevices>().is_err());
        Ok(())
    }
}
