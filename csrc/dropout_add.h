// Argument checks and the dtype rule of dropout_add, shared by its CPU kernel
// (csrc/dropout_add.cpp) and its CUDA launcher (csrc/cuda/dropout_add_launcher.cpp).
#pragma once
#include <ATen/ATen.h>

#include <optional>

#include "rng_state.h"

namespace gpt_kernels {

// The kernels take x and residual of one dtype, or a float32 residual with a bf16/f16 x.
inline bool dropout_add_pair_supported(at::ScalarType x, at::ScalarType residual) {
  return x == residual ||
         (residual == at::kFloat && (x == at::kBFloat16 || x == at::kHalf));
}

inline void check_dropout_add_common(const at::Tensor& x, const std::optional<at::Tensor>& residual,
                                     double p, const char* op) {
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op,
              ": x must be a floating-point tensor, got ", x.scalar_type());
  TORCH_CHECK(p >= 0.0 && p < 1.0, op, ": p must be in [0, 1), got ", p,
              " (p = 1 would drop everything; use zeros)");
  if (residual.has_value()) {
    TORCH_CHECK(residual->sizes() == x.sizes(), op,
                ": x and residual must have the same shape (no broadcasting); got x ", x.sizes(),
                ", residual ", residual->sizes());
    TORCH_CHECK(residual->device() == x.device(), op,
                ": x and residual must be on the same device; got x on ", x.device(),
                ", residual on ", residual->device());
    TORCH_CHECK(at::isFloatingType(residual->scalar_type()), op,
                ": residual must be a floating-point tensor, got ", residual->scalar_type());
  }
}

inline void check_dropout_add_forward(const at::Tensor& x, const std::optional<at::Tensor>& residual,
                                      double p) {
  check_dropout_add_common(x, residual, p, "dropout_add_forward");
  if (residual.has_value()) {
    TORCH_CHECK(dropout_add_pair_supported(x.scalar_type(), residual->scalar_type()),
                "dropout_add_forward: x ", x.scalar_type(), " with residual ",
                residual->scalar_type(), " is not supported; supported: the same dtype, or a "
                "float32 residual with a bfloat16/float16 x (dropout_add promotes other mixes)");
  }
}

inline void check_dropout_add_backward(const at::Tensor& grad, const at::Tensor& rng_state,
                                       double p, at::ScalarType grad_x_dtype) {
  TORCH_CHECK(at::isFloatingType(grad.scalar_type()),
              "dropout_add_backward: grad_out must be floating point, got ", grad.scalar_type());
  TORCH_CHECK(p >= 0.0 && p < 1.0, "dropout_add_backward: p must be in [0, 1), got ", p);
  TORCH_CHECK(dropout_add_pair_supported(grad_x_dtype, grad.scalar_type()),
              "dropout_add_backward: grad_x dtype ", grad_x_dtype, " with grad_out ",
              grad.scalar_type(), " is not supported");
  read_rng_state(rng_state, "dropout_add_backward");
}

}  // namespace gpt_kernels
