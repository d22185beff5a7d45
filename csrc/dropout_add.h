// Argument checks and the dtype rule of dropout_add, shared by its CPU kernel
// (csrc/dropout_add.cpp) and its CUDA launcher (csrc/cuda/dropout_add_launcher.cpp).
#pragma once
#include <ATen/ATen.h>

#include <optional>

#include "common.h"

namespace gpt_kernels {

// The kernels take x and residual of one dtype, or a float32 residual with a bf16/f16 x.
inline bool dropout_add_pair_supported(at::ScalarType x, at::ScalarType residual) {
  return x == residual ||
         (residual == at::kFloat && (x == at::kBFloat16 || x == at::kHalf));
}

inline void check_dropout_add_common(const at::Tensor& x, const std::optional<at::Tensor>& residual,
                                     double p, const char* op) {
  check_floating(op, "x", x);
  check_probability(op, "p", p, " (p = 1 would drop everything; use zeros)");
  if (residual.has_value()) {
    check_same_shape(op, {{"x", x}, {"residual", *residual}}, " (no broadcasting)");
    check_same_device(op, {{"x", x}, {"residual", *residual}});
    check_floating(op, "residual", *residual);
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
  check_floating("dropout_add_backward", "grad_out", grad);
  check_probability("dropout_add_backward", "p", p);
  TORCH_CHECK(dropout_add_pair_supported(grad_x_dtype, grad.scalar_type()),
              "dropout_add_backward: grad_x dtype ", grad_x_dtype, " with grad_out ",
              grad.scalar_type(), " is not supported");
  check_rng_state(rng_state, "dropout_add_backward");
}

}  // namespace gpt_kernels
