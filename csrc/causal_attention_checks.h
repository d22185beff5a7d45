// Argument checks and helpers of the causal attention op shared by its CPU kernel
// (csrc/causal_attention.cpp) and its CUDA launcher (csrc/cuda/causal_attention.cpp).
#pragma once
#include <ATen/ATen.h>

#include "rng_state.h"

#include <cstdint>
#include <utility>

namespace gpt_kernels {

inline void check_attention_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   double dropout_p, const char* op) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, op,
              ": q, k, v must be 4-D (B, H, T, D); got q.dim() = ", q.dim(), ", k.dim() = ",
              k.dim(), ", v.dim() = ", v.dim());
  TORCH_CHECK(q.sizes() == k.sizes() && q.sizes() == v.sizes(), op,
              ": q, k, v must have the same shape (B, H, T, D); got q ", q.sizes(), ", k ",
              k.sizes(), ", v ", v.sizes());
  TORCH_CHECK(q.device() == k.device() && q.device() == v.device(), op,
              ": q, k, v must be on the same device; got q on ", q.device(), ", k on ", k.device(),
              ", v on ", v.device());
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(), op,
              ": q, k, v must have the same dtype; got q ", q.scalar_type(), ", k ",
              k.scalar_type(), ", v ", v.scalar_type());
  const int64_t D = q.size(3);
  TORCH_CHECK(D == 32 || D == 64 || D == 128, op, ": head dimension D = ", D,
              " is not supported; supported: 32, 64, 128");
  TORCH_CHECK(dropout_p >= 0.0 && dropout_p < 1.0, op,
              ": dropout_p must be in [0, 1), got ", dropout_p);
}

inline void check_backward_inputs(const at::Tensor& dout, const at::Tensor& q,
                                  const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
                                  const at::Tensor& lse, const at::Tensor& rng_state,
                                  double dropout_p) {
  check_attention_inputs(q, k, v, dropout_p, "causal_attention_backward");
  TORCH_CHECK(dout.sizes() == q.sizes() && out.sizes() == q.sizes(),
              "causal_attention_backward: grad_out and out must have q's shape ", q.sizes(),
              "; got grad_out ", dout.sizes(), ", out ", out.sizes());
  TORCH_CHECK(dout.scalar_type() == q.scalar_type() && out.scalar_type() == q.scalar_type(),
              "causal_attention_backward: grad_out and out must have q's dtype ", q.scalar_type(),
              "; got ", dout.scalar_type(), ", ", out.scalar_type());
  TORCH_CHECK(dout.device() == q.device() && out.device() == q.device() &&
                  lse.device() == q.device(),
              "causal_attention_backward: grad_out, out, lse must be on q's device ", q.device());
  const auto lse_dtype = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK(lse.scalar_type() == lse_dtype && lse.dim() == 3 && lse.size(0) == q.size(0) &&
                  lse.size(1) == q.size(1) && lse.size(2) == q.size(2),
              "causal_attention_backward: lse must be (B, H, T) float32 (float64 for float64 q); got ",
              lse.scalar_type(), " ", lse.sizes());
  TORCH_CHECK(rng_state.device().is_cpu() && rng_state.scalar_type() == at::kLong &&
                  rng_state.numel() == 2,
              "causal_attention_backward: rng_state must be the int64[2] CPU tensor the "
              "forward returned");
}

// The kernels index (b, h, t) by strides and need the D elements of a row adjacent.
inline at::Tensor last_dim_contiguous(const at::Tensor& t) {
  return (t.stride(3) == 1 || t.size(3) == 1) ? t : t.contiguous();
}

}  // namespace gpt_kernels
