//! histoshard: PyTorch's fused batch-norm backward, `native_batch_norm_backward`
//! (the kernel PyTorch's own autograd runs), reached through one C++ function
//! compiled by `build.rs` (`batch_norm_backward.cpp`), since tch 0.22 does not
//! bind it.

use std::ffi::{CStr, c_char, c_int};

use torch_sys::C_tensor;

unsafe extern "C" {
    fn histoshard_native_batch_norm_backward(
        grad_out: *const C_tensor,
        input: *const C_tensor,
        weight: *const C_tensor,
        save_mean: *const C_tensor,
        save_invstd: *const C_tensor,
        eps: f64,
        grads: *mut *mut C_tensor,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
}

/// The gradients `(input, weight, bias)` of batch norm in training mode, from
/// the batch's `mean` and `inv_std` = 1/√(variance + ε), as
/// `native_batch_norm` returns them. Panics with PyTorch's message where
/// PyTorch throws (mismatched shapes or dtypes), as tch's own wrappers do.
pub(crate) fn native_batch_norm_backward(
    grad_out: &tch::Tensor,
    input: &tch::Tensor,
    weight: &tch::Tensor,
    mean: &tch::Tensor,
    inv_std: &tch::Tensor,
    eps: f64,
) -> (tch::Tensor, tch::Tensor, tch::Tensor) {
    let mut grads = [std::ptr::null_mut::<C_tensor>(); 3];
    let mut error = [0 as c_char; 1024];
    // SAFETY: every pointer is a live tensor borrowed for the call; the C++
    // side writes three new tensors into `grads` and returns 0, or writes a
    // NUL-terminated message of at most `error.len()` bytes and returns 1.
    let status = unsafe {
        histoshard_native_batch_norm_backward(
            grad_out.as_ptr(),
            input.as_ptr(),
            weight.as_ptr(),
            mean.as_ptr(),
            inv_std.as_ptr(),
            eps,
            grads.as_mut_ptr(),
            error.as_mut_ptr(),
            error.len(),
        )
    };
    if status != 0 {
        // SAFETY: the C++ side terminated the message inside the buffer.
        let message = unsafe { CStr::from_ptr(error.as_ptr()) };
        panic!("native_batch_norm_backward: {}", message.to_string_lossy());
    }
    // SAFETY: on success each pointer is a new tensor this side now owns.
    let [input_grad, weight_grad, bias_grad] = grads.map(|t| unsafe { tch::Tensor::from_ptr(t) });
    (input_grad, weight_grad, bias_grad)
}
