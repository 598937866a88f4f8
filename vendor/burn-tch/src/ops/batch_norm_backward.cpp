// histoshard: PyTorch's fused batch-norm backward, `native_batch_norm_backward`,
// for burn-tch's `batch_norm_train_backward` (src/ops/batch_norm_backward.rs).
// tch 0.22 binds `native_batch_norm` but not its backward: tch's generator
// skips functions with a `bool[3]` output mask. One C function, no state;
// tensors travel as tch's `C_tensor` pointers, which are `at::Tensor *`.
#include <ATen/ops/native_batch_norm_backward.h>

#include <cstddef>
#include <cstring>
#include <exception>

extern "C" int histoshard_native_batch_norm_backward(
    const at::Tensor *grad_out, const at::Tensor *input, const at::Tensor *weight,
    const at::Tensor *save_mean, const at::Tensor *save_invstd, double eps,
    at::Tensor **grads, char *error, size_t error_len) {
  try {
    auto [input_grad, weight_grad, bias_grad] = at::native_batch_norm_backward(
        *grad_out, *input, *weight, std::nullopt, std::nullopt, *save_mean,
        *save_invstd, /*train=*/true, eps, {true, true, true});
    grads[0] = new at::Tensor(std::move(input_grad));
    grads[1] = new at::Tensor(std::move(weight_grad));
    grads[2] = new at::Tensor(std::move(bias_grad));
    return 0;
  } catch (const std::exception &e) {
    if (error_len > 0) {
      std::strncpy(error, e.what(), error_len - 1);
      error[error_len - 1] = '\0';
    }
    return 1;
  }
}
