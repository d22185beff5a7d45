// causal_attention: the argument checks and the (B, H, T, D) views shared by its CPU kernel
// (csrc/causal_attention.cpp) and its CUDA launcher (csrc/cuda/causal_attention_launcher.cpp).
#pragma once
#include <ATen/ATen.h>

#include "common.h"

#include <cstdint>
#include <tuple>
#include <utility>
#include <vector>

namespace gpt_kernels {

inline void check_head_dim(int64_t D, const char* op) {
  TORCH_CHECK(D == 32 || D == 64 || D == 128, op, ": head dimension D = ", D,
              " is not supported; supported: 32, 64, 128");
}

// What a backward takes back from its forward: lse (B, H, T) float32 (float64 for float64
// inputs; `layout` names the shape in the message) and rng_state.
inline void check_forward_state(const at::Tensor& lse, const at::Tensor& rng_state, at::ScalarType dtype,
                                int64_t B, int64_t H, int64_t T, const char* layout, const char* op) {
  TORCH_CHECK(lse.scalar_type() == acc_dtype(dtype) && lse.dim() == 3 && lse.size(0) == B &&
                  lse.size(1) == H && lse.size(2) == T,
              op, ": lse must be ", layout, "; got ", lse.scalar_type(), " ", lse.sizes());
  check_rng_state(rng_state, op);
}

inline void check_attention_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   double dropout_p, const char* op) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, op,
              ": q, k, v must be 4-D (B, H, T, D); got q.dim() = ", q.dim(), ", k.dim() = ",
              k.dim(), ", v.dim() = ", v.dim());
  check_same_shape(op, {{"q", q}, {"k", k}, {"v", v}}, " (B, H, T, D)");
  check_same_device(op, {{"q", q}, {"k", k}, {"v", v}});
  check_same_dtype(op, {{"q", q}, {"k", k}, {"v", v}});
  check_head_dim(q.size(3), op);
  check_probability(op, "dropout_p", dropout_p);
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
  check_forward_state(lse, rng_state, q.scalar_type(), q.size(0), q.size(1), q.size(2),
                      "(B, H, T) float32 (float64 for float64 q)", "causal_attention_backward");
}

// causal_attention_qkv: qkv (B, T, 3C) holds q, k, v side by side (as nn.Linear(C, 3C) makes
// them), C = n_head * D.
inline void check_qkv_inputs(const at::Tensor& qkv, int64_t n_head, double dropout_p, const char* op) {
  TORCH_CHECK(qkv.dim() == 3, op, ": qkv must be 3-D (B, T, 3C) with q, k, v side by side; got shape ",
              qkv.sizes());
  TORCH_CHECK(n_head > 0, op, ": n_head must be positive, got ", n_head);
  TORCH_CHECK(qkv.size(2) % (3 * n_head) == 0, op, ": the last dimension of qkv (", qkv.size(2),
              ") must be 3 * n_head * D; n_head = ", n_head);
  check_head_dim(qkv.size(2) / (3 * n_head), op);
  TORCH_CHECK(at::isFloatingType(qkv.scalar_type()), op, ": qkv must be floating point, got ",
              qkv.scalar_type());
  check_probability(op, "dropout_p", dropout_p);
}

inline void check_qkv_backward_inputs(const at::Tensor& dout, const at::Tensor& qkv,
                                      const at::Tensor& out, const at::Tensor& lse,
                                      const at::Tensor& rng_state, int64_t n_head,
                                      double dropout_p) {
  const char* op = "causal_attention_qkv_backward";
  check_qkv_inputs(qkv, n_head, dropout_p, op);
  const std::vector<int64_t> shape = {qkv.size(0), qkv.size(1), qkv.size(2) / 3};
  TORCH_CHECK(dout.sizes() == shape && out.sizes() == shape, op,
              ": grad_out and out must be (B, T, C) = ", shape, "; got grad_out ", dout.sizes(),
              ", out ", out.sizes());
  TORCH_CHECK(dout.scalar_type() == qkv.scalar_type() && out.scalar_type() == qkv.scalar_type(),
              op, ": grad_out and out must have qkv's dtype ", qkv.scalar_type());
  TORCH_CHECK(dout.device() == qkv.device() && out.device() == qkv.device() &&
                  lse.device() == qkv.device(),
              op, ": grad_out, out, lse must be on qkv's device ", qkv.device());
  check_forward_state(lse, rng_state, qkv.scalar_type(), qkv.size(0), n_head, qkv.size(1),
                      "(B, n_head, T) float32 (float64 for float64 qkv)", op);
}

// (B, T, C) -> its (B, H, T, D) view (no copy; t contiguous).
inline at::Tensor heads_view(const at::Tensor& t, int64_t n_head) {
  return t.view({t.size(0), t.size(1), n_head, t.size(2) / n_head}).permute({0, 2, 1, 3});
}

// (B, T, 3C) -> the (B, H, T, D) views of its q, k and v thirds (no copy; qkv contiguous).
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> qkv_heads(const at::Tensor& qkv,
                                                                int64_t n_head) {
  const auto parts = qkv.view({qkv.size(0), qkv.size(1), 3, n_head, qkv.size(2) / (3 * n_head)});
  return {parts.select(2, 0).permute({0, 2, 1, 3}), parts.select(2, 1).permute({0, 2, 1, 3}),
          parts.select(2, 2).permute({0, 2, 1, 3})};
}

// The kernels index (b, h, t) by strides and need the D elements of a row adjacent.
inline at::Tensor last_dim_contiguous(const at::Tensor& t) {
  return (t.stride(3) == 1 || t.size(3) == 1) ? t : t.contiguous();
}

}  // namespace gpt_kernels
