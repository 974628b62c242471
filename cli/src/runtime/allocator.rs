//! Allocator tuning for tensor workloads.

/// Keeps freed tensor buffers (up to 32 MiB each) in the process instead of returning them to
/// the kernel (the peak footprint stays reserved). glibc's defaults unmap large buffers on free, so every training step pays page
/// faults and page zeroing for each activation again (measured: a third of the step time of
/// the MNIST recipe). No-op on other C libraries.
pub fn keep_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc's largest mmap threshold on 64-bit systems.
        const MMAP_THRESHOLD: libc::c_int = 32 << 20;
        // Never give the heap's free top back to the kernel (a training step frees gigabytes
        // that the next step takes again).
        const TRIM_THRESHOLD: libc::c_int = -1;
        // SAFETY: mallopt only changes allocator parameters; it is called before any other
        // thread exists. A rejected value (return 0) leaves the default in place.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        }
    }
}
