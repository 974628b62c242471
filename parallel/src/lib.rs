//! Data-parallel training for maskdit: where a process stands ([`World`], from torchrun's
//! variables), how ranks meet ([`TcpGroup::join`] at `MASTER_ADDR:MASTER_PORT`), and the
//! collectives training needs ([`Collective`]: sums and broadcasts, bucketed by [`sum_all`]
//! and [`broadcast_all`]) over TCP or, with the `nccl` feature, NCCL.
//!
//! Two ranks summing a tensor (each in its own process, started with `WORLD_SIZE=2`,
//! `RANK=0|1`, `MASTER_ADDR=127.0.0.1`, `MASTER_PORT=29500` and the same
//! `MASKDIT_RDZV_SECRET`, which every rank proves it knows when it joins):
//!
//! ```no_run
//! use std::time::Duration;
//! use candle_core::{Device, Tensor};
//! use maskdit_parallel::{Collective, TcpGroup, World};
//!
//! # fn main() -> maskdit_parallel::Result<()> {
//! let world = World::from_env()?.expect("started by a launcher");
//! let (mut group, _) = TcpGroup::join(&world, b"", Duration::from_secs(60), Duration::from_secs(600))?;
//! let total = group.sum(&Tensor::new(&[world.rank as f32], &Device::Cpu)?)?;
//! # Ok(())
//! # }
//! ```

mod collective;
mod error;
#[cfg(feature = "nccl")]
mod nccl;
mod tcp;
mod world;

pub use collective::{broadcast_all, sum_all, sum_scalars, Collective, BUCKET_ELEMENTS};
pub use error::{Error, Result};
#[cfg(feature = "nccl")]
pub use nccl::{NcclGroup, OnFailure};
pub use tcp::TcpGroup;
pub use world::{World, LOCAL_RANK, MASTER_ADDR, MASTER_PORT, RANK, RDZV_SECRET, WORLD_SIZE};
