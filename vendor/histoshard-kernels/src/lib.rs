//! CPU kernels shared by histoshard's vendored burn backends
//! (`vendor/burn-tch`, `vendor/burn-flex`; vendor/README.md says which change
//! uses which). Each kernel works on plain slices in NCHW order and leaves
//! threading to its caller, which knows its backend's thread pool: one
//! implementation, two backends.

extern crate alloc;

pub mod depthwise;

/// The element types the kernels run on: what `f32` and `f64` have in common.
pub trait Real:
    Copy
    + Default
    + core::ops::Add<Output = Self>
    + core::ops::Mul<Output = Self>
    + core::ops::AddAssign
    + Send
    + Sync
{
    const ONE: Self;

    fn to_f64(self) -> f64;

    fn from_f64(value: f64) -> Self;
}

impl Real for f32 {
    const ONE: Self = 1.0;

    fn to_f64(self) -> f64 {
        self.into()
    }

    fn from_f64(value: f64) -> Self {
        value as f32
    }
}

impl Real for f64 {
    const ONE: Self = 1.0;

    fn to_f64(self) -> f64 {
        self
    }

    fn from_f64(value: f64) -> Self {
        value
    }
}
