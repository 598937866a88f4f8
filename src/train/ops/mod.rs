//! Backend operations histoshard adds to burn (`#[backend_extension]`): one
//! kernel where burn's generic code makes several passes over the tensors.
//!
//! - [`relu6`]: ReLU6 forward and backward in one pass each.
//! - [`adam`]: Adam's update of a parameter in one pass.

pub mod adam;
pub mod relu6;
