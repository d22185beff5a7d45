// Argument checks of bias_gelu, shared by its CPU kernel (csrc/bias_gelu.cpp) and its CUDA
// launcher (csrc/cuda/bias_gelu_launcher.cpp), and the row blocking both backends use.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <string_view>

namespace gpt_kernels {

// The backward sums grad_x over blocks of this many rows into one fp32 partial row each
// (CPU task = CUDA thread block row), then sums the partial rows in a fixed order: the bias
// gradient does not depend on the number of threads.
constexpr int64_t kBiasGeluRowBlock = 32;

inline void check_bias_gelu_inputs(const at::Tensor& x, const at::Tensor& bias, const char* op) {
  TORCH_CHECK(x.dim() >= 1, op, ": x must have at least one dimension (..., N), got a scalar");
  TORCH_CHECK(bias.dim() == 1, op, ": bias must be 1-D (N,), got shape ", bias.sizes());
  TORCH_CHECK(bias.size(0) == x.size(-1), op, ": bias has ", bias.size(0),
              " elements but x's last dimension is ", x.size(-1), " (x ", x.sizes(),
              "); the bias is added along the last dimension");
  TORCH_CHECK(x.device() == bias.device(), op, ": x and bias must be on the same device; got x on ",
              x.device(), ", bias on ", bias.device());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op,
              ": x must be a floating-point tensor, got ", x.scalar_type());
  TORCH_CHECK(x.scalar_type() == bias.scalar_type(), op, ": x and bias must have the same dtype; got x ",
              x.scalar_type(), ", bias ", bias.scalar_type(),
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
