//! histoshard (vendor/README.md, burn-flex changes 6 and 7): new output
//! buffers zeroed by the threads that fill them.
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
        .for_each(|(i, part)| fill(i, zeroed(part, zero)));
    // SAFETY: the chunks cover `0..len`, and each was initialised above.
    unsafe { out.set_len(len) };
    out
}

/// A vector of `len` values in chunks of `chunk` (`len` a multiple of it),
/// chunk `i` of class `i % classes` — in an `[n, c, …]` tensor cut into
/// planes, the class of a plane is its channel. Each class is one task's,
/// at least `min_classes` to a task: `fill(class, chunks)` gets the class's
/// chunks in order, each zeroed as it is handed out, and its return values
/// come back in class order. Chunks `fill` leaves untaken are zeroed after it.
///
/// Change 7: batch norm computes a channel's statistics and then writes its
/// output while the channel's planes are in cache, instead of a pass over
/// the whole tensor for each.
pub(crate) fn par_filled_by_class<T, R>(
    zero: T,
    len: usize,
    chunk: usize,
    classes: usize,
    min_classes: usize,
    fill: impl Fn(usize, &mut ClassChunks<'_, T>) -> R + Sync,
) -> (Vec<T>, Vec<R>)
where
    T: Copy + Send + Sync,
    R: Send,
{
    let chunk = chunk.max(1);
    let chunks = len / chunk;
    assert_eq!(
        chunks * chunk,
        len,
        "par_filled_by_class: {len} values in chunks of {chunk}"
    );
    let mut out = Vec::<T>::with_capacity(len);
    let base = Shared(out.spare_capacity_mut().as_mut_ptr());
    let results = (0..classes)
        .into_par_iter()
        .with_min_len(min_classes.max(1))
        .map(|class| {
            let mut parts = ClassChunks {
                base: &base,
                chunk,
                next: class,
                end: chunks,
                step: classes,
                zero,
            };
            let result = fill(class, &mut parts);
            parts.for_each(drop);
            result
        })
        .collect();
    // SAFETY: every chunk `i < chunks` has class `i % classes < classes`,
    // whose task handed it out (zeroing it) or zeroed it after `fill`; the
    // chunks cover `0..len`.
    unsafe { out.set_len(len) };
    (out, results)
}

/// The vector's start, shared by the tasks of [`par_filled_by_class`], which
/// write disjoint chunks through it.
struct Shared<T>(*mut MaybeUninit<T>);

// SAFETY: each task writes only its own class's chunks (ClassChunks).
unsafe impl<T: Send> Sync for Shared<T> {}

/// One class's chunks of [`par_filled_by_class`]'s vector, in order, each
/// zeroed.
pub(crate) struct ClassChunks<'a, T> {
    base: &'a Shared<T>,
    chunk: usize,
    next: usize,
    end: usize,
    step: usize,
    zero: T,
}

impl<'a, T: Copy> Iterator for ClassChunks<'a, T> {
    type Item = &'a mut [T];

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let i = self.next;
        self.next += self.step;
        // SAFETY: chunk `i` lies within the vector's capacity (`i < end`,
        // `end · chunk == len`), and only this class's iterator, which
        // yields each of its chunks once, hands it out.
        let part =
            unsafe { core::slice::from_raw_parts_mut(self.base.0.add(i * self.chunk), self.chunk) };
        Some(zeroed(part, self.zero))
    }
}

/// `part`, every value set to `zero`, as initialised values.
fn zeroed<T: Copy>(part: &mut [MaybeUninit<T>], zero: T) -> &mut [T] {
    part.fill(MaybeUninit::new(zero));
    // SAFETY: every element of `part` was initialised on the line above.
    unsafe { &mut *(part as *mut [MaybeUninit<T>] as *mut [T]) }
}
