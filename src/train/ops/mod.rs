//! Backend operations histoshard adds to burn (`#[backend_extension]`): one
//! kernel where burn's generic code makes several passes over the tensors.
//!
//! - [`relu6`]: ReLU6 forward and backward in one pass each.
//! - [`batch_norm_relu6`]: a training batch norm and the ReLU6 after it, as
//!   one step each way.
//! - [`adam`]: Adam's update of a parameter in one pass.

pub mod adam;
pub mod batch_norm_relu6;
pub mod relu6;
