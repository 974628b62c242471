//! The CUDA device's default memory pool, from which candle allocates (stream-ordered): kept
//! between steps instead of handed back to the driver, and its high-water mark. On the CPU,
//! and in builds without the `cuda` feature, there is no pool: the calls do nothing.

use candle_core::Device;

#[cfg(feature = "cuda")]
use candle_core::cuda_backend::{
    cudarc::driver::{result, sys},
    WrapErr,
};

/// The default memory pool of `device`'s GPU, or `None` off CUDA.
#[cfg(feature = "cuda")]
fn pool(device: &Device) -> candle_core::Result<Option<sys::CUmemoryPool>> {
    let Device::Cuda(cuda) = device else { return Ok(None) };
    let ordinal = cuda.cuda_stream().context().cu_device();
    // SAFETY: `ordinal` is the device of a live context.
    Ok(Some(unsafe { result::device::get_default_mem_pool(ordinal) }.w()?))
}

/// Sets a u64 attribute of `device`'s pool.
#[cfg(feature = "cuda")]
fn set(device: &Device, attribute: sys::CUmemPool_attribute, mut value: u64) -> candle_core::Result<()> {
    if let Some(pool) = pool(device)? {
        // SAFETY: a valid pool, and the attributes this module sets are u64s.
        unsafe { result::mem_pool::set_attribute(pool, attribute, (&mut value as *mut u64).cast()) }.w()?;
    }
    Ok(())
}

/// Keeps freed device memory in the pool instead of handing it back to the driver at every
/// synchronisation (the release threshold, 0 by default, becomes unbounded), so a training loop
/// does not map its memory again at every step. Does nothing on the CPU.
pub fn keep_memory_pool(device: &Device) -> candle_core::Result<()> {
    #[cfg(feature = "cuda")]
    set(device, sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, u64::MAX)?;
    #[cfg(not(feature = "cuda"))]
    let _ = device;
    Ok(())
}

/// The most device memory the pool has held since the process started (or since
/// [`reset_peak_memory`]), in bytes; `None` on the CPU.
pub fn peak_memory(device: &Device) -> candle_core::Result<Option<u64>> {
    #[cfg(feature = "cuda")]
    if let Some(pool) = pool(device)? {
        let mut peak: u64 = 0;
        let attribute = sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH;
        // SAFETY: a valid pool, and the high-water mark is a u64.
        unsafe { result::mem_pool::get_attribute(pool, attribute, (&mut peak as *mut u64).cast()) }.w()?;
        return Ok(Some(peak));
    }
    #[cfg(not(feature = "cuda"))]
    let _ = device;
    Ok(None)
}

/// Hands the memory the pool holds but nothing uses back to the driver (after a
/// synchronisation), so that the next [`peak_memory`] counts only what comes after.
pub fn release_unused(device: &Device) -> candle_core::Result<()> {
    #[cfg(feature = "cuda")]
    if let Some(pool) = pool(device)? {
        device.synchronize()?;
        // SAFETY: a valid pool; trimming frees only memory no allocation holds.
        unsafe { result::mem_pool::trim_to(pool, 0) }.w()?;
    }
    #[cfg(not(feature = "cuda"))]
    let _ = device;
    Ok(())
}

/// Starts [`peak_memory`]'s count again from what the pool holds now.
pub fn reset_peak_memory(device: &Device) -> candle_core::Result<()> {
    #[cfg(feature = "cuda")]
    set(device, sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH, 0)?;
    #[cfg(not(feature = "cuda"))]
    let _ = device;
    Ok(())
}
