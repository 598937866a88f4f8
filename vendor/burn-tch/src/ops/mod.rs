mod activation;
mod base;
mod batch_norm_backward;
mod bool_tensor;
mod depthwise;
mod int_tensor;
mod module;
mod qtensor;
mod tensor;
mod transaction;

pub(crate) use base::*;
