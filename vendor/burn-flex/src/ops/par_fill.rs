//! histoshard (vendor/README.md, burn-flex change 6): a new output buffer
//! zeroed by the threads that fill it.
//!
//! `vec![zero; len]` followed by a parallel fill zeroes the whole buffer on
//! the calling thread first: with `train`'s allocator settings (freed memory
//! kept, no `mmap`: `src/alloc.rs`) that is a `memset` of every new tensor,
//! a serial pass that rayon's threads then write again. A `perf` profile of
//! the default job's fine-tuning put `memset` at 17% of the calling
//! thread's samples (batch norm's outputs and gradients, the convolutions'
//! outputs; docs/BENCHMARKS.md). Here each chunk is zeroed by the task that
//! fills it, just before, so the zeroing runs on every thread and the
//! chunk is in cache when the fill writes it.
//!
//! Tested through its callers (`tests/flex_kernels.rs`, the recorded
//! training digests): a vendored crate's own tests do not run in
//! histoshard's workspace.

use core::mem::MaybeUninit;

use rayon::prelude::*;

/// A vector of `len` values, each `zero`, then filled in parallel by
/// `fill(index, chunk)` over its chunks of `chunk` values (the last may be
/// shorter), at least `min_chunks` chunks to a task.
pub(crate) fn par_filled<T>(
    zero: T,
    len: usize,
    chunk: usize,
    min_chunks: usize,
    fill: impl Fn(usize, &mut [T]) + Sync,
) -> Vec<T>
where
    T: Copy + Send + Sync,
{
    let mut out = Vec::<T>::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .with_min_len(min_chunks.max(1))
        .enumerate()
        .for_each(|(i, part)| {
            part.fill(MaybeUninit::new(zero));
            // SAFETY: every element of `part` was initialised on the line above.
            let part = unsafe { &mut *(part as *mut [MaybeUninit<T>] as *mut [T]) };
            fill(i, part);
        });
    // SAFETY: the chunks cover `0..len`, and each was initialised above.
    unsafe { out.set_len(len) };
    out
}

