//! Keeps freed tensor memory inside the process.
//!
//! glibc serves every allocation above its mmap threshold (at most 32 MiB)
//! with a fresh `mmap` and gives it back with `munmap` on free, so a training
//! step that allocates and frees activations of hundreds of MiB pays a page
//! fault for every 4 KiB page, every step. Profiled on the `cnn` at 224² with
//! LibTorch, 38% of the step was the kernel mapping and zeroing pages
//! (`docs/BENCHMARKS.md`). Serving large blocks from the heap and never
//! trimming it lets each step reuse the previous step's memory: 1.5–1.75×
//! faster steps on both backends. The cost is that the process keeps its peak
//! memory until it exits, which a trainer does anyway.

/// Call once, before the first tensor, in processes that train or infer.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before
    // any other thread allocates (the CLI calls it first thing).
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
