// bias_gelu: the argument checks shared by its CPU kernel (csrc/bias_gelu.cpp) and its CUDA
// launcher (csrc/cuda/bias_gelu_launcher.cpp). The formulas and the row blocking of the bias
// gradient (kBiasGeluRowBlock) both backends use are in gelu_math.h.
#pragma once
#include <ATen/ATen.h>

#include <string_view>

#include "common.h"
#include "gelu_math.h"

namespace gpt_kernels {

inline void check_bias_gelu_inputs(const at::Tensor& x, const at::Tensor& bias, const char* op) {
  TORCH_CHECK(x.dim() >= 1, op, ": x must have at least one dimension (..., N), got a scalar");
  TORCH_CHECK(bias.dim() == 1, op, ": bias must be 1-D (N,), got shape ", bias.sizes());
  TORCH_CHECK(bias.size(0) == x.size(-1), op, ": bias has ", bias.size(0),
              " elements but x's last dimension is ", x.size(-1), " (x ", x.sizes(),
              "); the bias is added along the last dimension");
  check_same_device(op, {{"x", x}, {"bias", bias}});
  check_floating(op, "x", x);
  check_same_dtype(op, {{"x", x}, {"bias", bias}},
                   " (cast one, e.g. bias.to(x.dtype); under torch.autocast on CUDA both become bfloat16)");
}

// approximate: "none" (the exact erf GELU) or "tanh" (its tanh approximation), as F.gelu takes
// it. Returns whether it is the tanh form.
inline bool gelu_is_tanh(std::string_view approximate, const char* op) {
  TORCH_CHECK(approximate == "none" || approximate == "tanh", op,
              ": approximate must be 'none' (the exact GELU) or 'tanh', got '", approximate, "'");
  return approximate == "tanh";
}

inline void check_bias_gelu_backward_inputs(const at::Tensor& grad_out, const at::Tensor& x,
                                            const at::Tensor& bias) {
  check_bias_gelu_inputs(x, bias, "bias_gelu_backward");
  TORCH_CHECK(grad_out.sizes() == x.sizes(), "bias_gelu_backward: grad_out must have x's shape ",
              x.sizes(), ", got ", grad_out.sizes());
  TORCH_CHECK(grad_out.device() == x.device(), "bias_gelu_backward: grad_out must be on x's device ",
              x.device(), ", got ", grad_out.device());
  TORCH_CHECK(grad_out.scalar_type() == x.scalar_type(), "bias_gelu_backward: grad_out must have x's dtype ",
              x.scalar_type(), ", got ", grad_out.scalar_type());
}

}  // namespace gpt_kernels
