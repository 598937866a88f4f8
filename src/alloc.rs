//! Keeps freed memory inside the process.
//!
//! glibc serves every allocation above its mmap threshold (at most 32 MiB)
//! with a fresh `mmap` and gives it back with `munmap` on free, so a program
//! that allocates and frees large buffers in a loop pays a page fault for
//! every 4 KiB page, every time (`docs/BENCHMARKS.md`):
//! - a training step allocates and frees activations of hundreds of MiB.
//!   Profiled on the `cnn` at 224² with LibTorch, 38% of the step was the
//!   kernel mapping and zeroing pages. Keeping the memory made steps
//!   1.5–1.75× faster on both backends.
//! - `prepare` allocates a decoded image, patch copies and encode buffers of
//!   100 KiB–1 MiB per record: 170,000 page faults and ~0.6 s of system time
//!   on the 165-image benchmark, 57,000 and ~0.3 s with this.
//!
//! Serving large blocks from the heap and never trimming it lets each step
//! reuse the previous step's memory. The cost is that the process keeps its
//! peak memory until it exits, which a command-line tool does anyway.

/// Call once, first thing, before other threads start.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before
    // any other thread allocates (the CLI calls it first thing).
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
