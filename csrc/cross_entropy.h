// Fused cross-entropy: the argument checks shared by the CPU kernel (csrc/cross_entropy.cpp) and
// the CUDA launcher (csrc/cuda/cross_entropy_launcher.cpp), so both backends reject bad input
// with the same message before touching any memory.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/string_view.h>

#include "common.h"

namespace gpt_kernels {

enum CeReduction : int { kCeNone = 0, kCeMean = 1, kCeSum = 2 };

inline int ce_reduction(c10::string_view reduction) {
  if (reduction == "mean") return kCeMean;
  if (reduction == "sum") return kCeSum;
  if (reduction == "none") return kCeNone;
  TORCH_CHECK(false, "cross_entropy: reduction must be 'mean', 'sum' or 'none', got '",
              std::string(reduction), "'");
}

// Shapes, dtypes and devices (everything but the target values, which the backends check).
inline void ce_check_inputs(const at::Tensor& logits, const at::Tensor& targets) {
  TORCH_CHECK(logits.dim() == 2, "cross_entropy: logits must be 2-D (N, V), got shape ",
              logits.sizes());
  TORCH_CHECK(targets.dim() == 1, "cross_entropy: targets must be 1-D (N,), got shape ",
              targets.sizes());
  TORCH_CHECK(targets.size(0) == logits.size(0), "cross_entropy: logits has N = ",
              logits.size(0), " rows but targets has ", targets.size(0), " entries");
  TORCH_CHECK(logits.size(0) > 0, "cross_entropy: N = 0: logits and targets have no rows");
  TORCH_CHECK(logits.size(1) > 0, "cross_entropy: V = 0: logits have no classes");
  TORCH_CHECK(targets.scalar_type() == at::kLong,
              "cross_entropy: targets must be int64 (torch.long), got ", targets.scalar_type());
  const auto dt = logits.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf || dt == at::kDouble,
              "cross_entropy: logits must be float32, bfloat16, float16 or float64, got ", dt);
  check_same_device("cross_entropy", {{"logits", logits}, {"targets", targets}});
}

// The arguments of the backward op: grad (N, V) as made by the forward, grad_loss of the loss's
// shape ((N,) for "none", () otherwise).
inline void ce_check_scale_args(const at::Tensor& grad, const at::Tensor& grad_loss,
                                const at::Tensor& targets, int reduction) {
  TORCH_CHECK(grad.dim() == 2 && targets.dim() == 1 && targets.size(0) == grad.size(0),
              "cross_entropy backward: grad must be (N, V) and targets (N,), got ",
              grad.sizes(), " and ", targets.sizes());
  TORCH_CHECK(targets.scalar_type() == at::kLong, "cross_entropy backward: targets must be int64");
  const int64_t expected = reduction == kCeNone ? grad.size(0) : 1;
  TORCH_CHECK(grad_loss.numel() == expected, "cross_entropy backward: the upstream gradient has ",
              grad_loss.numel(), " elements, expected ", expected);
  TORCH_CHECK(grad.device() == grad_loss.device() && grad.device() == targets.device(),
              "cross_entropy backward: grad, upstream gradient and targets must share a device");
}

// The upstream gradient of the backward ops as a flat, contiguous array in the arithmetic type
// of grad (fp32; fp64 for fp64): one factor per row for "none", a single one otherwise.
inline at::Tensor ce_upstream_factors(const at::Tensor& grad_loss, const at::Tensor& grad) {
  return grad_loss.reshape({-1}).to(acc_dtype(grad.scalar_type())).contiguous();
}

// The arguments of the 16-bit backward (cross_entropy_regrad_): grad as made by the forward from
// these logits, and the upstream gradient.
inline void ce_check_regrad_args(const at::Tensor& grad, const at::Tensor& logits,
                                 const at::Tensor& grad_loss, const at::Tensor& targets,
                                 int reduction) {
  ce_check_scale_args(grad, grad_loss, targets, reduction);
  TORCH_CHECK(grad.sizes() == logits.sizes() && grad.scalar_type() == logits.scalar_type(),
              "cross_entropy backward: grad must have the logits' shape and dtype, got ",
              grad.sizes(), " ", grad.scalar_type(), " and ", logits.sizes(), " ",
              logits.scalar_type());
  TORCH_CHECK(grad.device() == logits.device(),
              "cross_entropy backward: grad and logits must share a device");
}

}  // namespace gpt_kernels
