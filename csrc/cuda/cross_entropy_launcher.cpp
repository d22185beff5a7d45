// Fused cross-entropy, CUDA launcher: checks the arguments (the same checks and messages as the
// CPU kernel, csrc/cross_entropy.h), allocates the outputs and runs the kernels of
// cross_entropy.cu on the current stream. Named *_launcher.cpp because an object file
// cross_entropy.o would collide with the one built from cross_entropy.cu.
//
// Targets outside [0, V): the kernels never read outside a row (such a row gets a nan loss and
// gradient) and count them; unless GPT_KERNELS_CHECK_TARGETS=0, the launcher then copies that
// count to the host (one synchronisation, after the kernels are queued) and raises naming the
// first bad target. With GPT_KERNELS_CHECK_TARGETS=0, and while a CUDA graph is being captured
// (where a synchronisation is not allowed), there is no synchronisation and a bad target shows
// up as a nan loss.
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "../cross_entropy.h"
#include "common_cuda.h"
#include "cross_entropy_cuda.h"

namespace gpt_kernels {
namespace {

bool check_targets_enabled() {
  const char* v = std::getenv("GPT_KERNELS_CHECK_TARGETS");
  if (v != nullptr && std::strcmp(v, "0") == 0) return false;
  return c10::cuda::currentStreamCaptureStatusMayInitCtx() == c10::cuda::CaptureStatus::None;
}

// logits: contiguous, 16-byte aligned; grad: nullptr, a fresh contiguous tensor, or logits.
at::Tensor ce_run_cuda(const at::Tensor& logits, const at::Tensor& targets, int64_t ignore_index,
                       int reduction, at::Tensor* grad) {
  const int64_t N = logits.size(0), V = logits.size(1);
  const auto acc_type = acc_dtype(logits.scalar_type());
  at::Tensor row_loss = at::empty({N}, logits.options().dtype(acc_type));
  at::Tensor out = at::empty({}, logits.options().dtype(acc_type));  // fp32 for 16-bit logits
  at::Tensor counts = at::empty({cuda::kCeCountsSize}, logits.options().dtype(at::kInt));
  cuda::CeForwardArgs a;
  a.logits = logits.data_ptr();
  a.grad = grad ? grad->data_ptr() : nullptr;
  a.targets = targets.data_ptr<int64_t>();
  a.row_loss = row_loss.data_ptr();
  a.out = out.data_ptr();
  a.counts = counts.data_ptr<int>();
  a.N = N;
  a.V = V;
  a.ignore_index = ignore_index;
  a.reduction = reduction;
  a.dtype = dtype_code(logits.scalar_type(), "cross_entropy");
  check_launch(cuda::ce_forward(a, c10::cuda::getCurrentCUDAStream()), "cross_entropy: CUDA");

  if (check_targets_enabled()) {
    const int bad = counts[cuda::kCeCountsSize - 1].item<int>();  // waits for the kernels
    if (bad > 0) {  // the slow path only on error: find the first bad target for the message
      const at::Tensor is_bad = (targets != ignore_index) & ((targets < 0) | (targets >= V));
      const int64_t i = is_bad.nonzero()[0][0].item<int64_t>();
      TORCH_CHECK(false, "cross_entropy: target ", targets[i].item<int64_t>(), " at row ", i,
                  " is outside [0, ", V, ") and is not ignore_index (", ignore_index, ")");
    }
  }
  if (reduction == kCeNone) return row_loss;
  return out;
}

// The kernels read rows as 16-byte vectors and need the gradient to share the logits' alignment:
// a fresh allocation is 16-byte aligned, so the logits must be too (a view with an odd storage
// offset is copied).
at::Tensor aligned_contiguous(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  if (!aligned16(c)) c = c.clone();
  return c;
}

std::tuple<at::Tensor, at::Tensor> ce_fwd_cuda(const at::Tensor& logits_in,
                                               const at::Tensor& targets_in, int64_t ignore_index,
                                               c10::string_view reduction_name, bool compute_grad) {
  ce_check_inputs(logits_in, targets_in);
  const int reduction = ce_reduction(reduction_name);
  c10::cuda::CUDAGuard guard(logits_in.device());
  const at::Tensor logits = aligned_contiguous(logits_in), targets = targets_in.contiguous();
  at::Tensor grad;
  if (compute_grad) grad = at::empty_like(logits, at::MemoryFormat::Contiguous);
  at::Tensor loss = ce_run_cuda(logits, targets, ignore_index, reduction,
                                compute_grad ? &grad : nullptr);
  if (!compute_grad) grad = at::empty({0}, logits.options());
  return {loss, grad};
}

at::Tensor ce_fwd_inplace_cuda(at::Tensor& logits, const at::Tensor& targets_in,
                               int64_t ignore_index, c10::string_view reduction_name) {
  ce_check_inputs(logits, targets_in);
  const int reduction = ce_reduction(reduction_name);
  c10::cuda::CUDAGuard guard(logits.device());
  const at::Tensor targets = targets_in.contiguous();
  if (logits.is_contiguous() && aligned16(logits)) {
    at::Tensor grad = logits;
    return ce_run_cuda(logits, targets, ignore_index, reduction, &grad);
  }
  at::Tensor x = aligned_contiguous(logits);  // compute in an aligned copy, then write back
  at::Tensor loss = ce_run_cuda(x, targets, ignore_index, reduction, &x);
  logits.copy_(x);
  return loss;
}

void ce_scale_grad_cuda(at::Tensor& grad, const at::Tensor& grad_loss, const at::Tensor& targets_in,
                        int64_t ignore_index, c10::string_view reduction_name) {
  const int reduction = ce_reduction(reduction_name);
  ce_check_scale_args(grad, grad_loss, targets_in, reduction);
  c10::cuda::CUDAGuard guard(grad.device());
  const at::Tensor scales = ce_upstream_factors(grad_loss, grad);
  const at::Tensor targets = targets_in.contiguous();
  at::Tensor g = grad.is_contiguous() ? grad : grad.contiguous();
  check_launch(cuda::ce_scale_grad(g.data_ptr(), scales.data_ptr(), reduction == kCeNone,
                                   targets.data_ptr<int64_t>(), g.size(0), g.size(1), ignore_index,
                                   dtype_code(g.scalar_type(), "cross_entropy"),
                                   c10::cuda::getCurrentCUDAStream()),
               "cross_entropy: CUDA");
  if (!g.is_same(grad)) grad.copy_(g);
}

// The 16-bit backward (see cross_entropy_regrad_ in ../cross_entropy.cpp): recompute the rows
// whose upstream factor is not exactly 1 from the logits, rounding once. No host round trip: the
// kernel reads the factors on the device and returns at once when the single factor is 1.
void ce_regrad_cuda(at::Tensor& grad, const at::Tensor& logits_in, const at::Tensor& grad_loss,
                    const at::Tensor& targets_in, int64_t ignore_index,
                    c10::string_view reduction_name) {
  const int reduction = ce_reduction(reduction_name);
  ce_check_inputs(logits_in, targets_in);
  ce_check_regrad_args(grad, logits_in, grad_loss, targets_in, reduction);
  c10::cuda::CUDAGuard guard(grad.device());
  const at::Tensor factors = ce_upstream_factors(grad_loss, grad);
  const at::Tensor logits = aligned_contiguous(logits_in), targets = targets_in.contiguous();
  // the kernel reads the logits and writes the gradient as 16-byte vectors at the same offsets
  const bool direct = grad.is_contiguous() && aligned16(grad);
  at::Tensor g = direct ? grad : grad.is_contiguous() ? grad.clone() : grad.contiguous();
  at::Tensor counts = at::empty({cuda::kCeCountsSize}, logits.options().dtype(at::kInt));
  cuda::CeForwardArgs a;
  a.logits = logits.data_ptr();
  a.grad = g.data_ptr();
  a.targets = targets.data_ptr<int64_t>();
  a.row_loss = nullptr;
  a.out = nullptr;
  a.counts = counts.data_ptr<int>();
  a.N = logits.size(0);
  a.V = logits.size(1);
  a.ignore_index = ignore_index;
  a.reduction = reduction;
  a.dtype = dtype_code(logits.scalar_type(), "cross_entropy");
  check_launch(cuda::ce_regrad(a, factors.data_ptr(), reduction == kCeNone,
                               c10::cuda::getCurrentCUDAStream()),
               "cross_entropy: CUDA");
  if (!g.is_same(grad)) grad.copy_(g);
}

}  // namespace

TORCH_LIBRARY_IMPL(gpt_kernels, CUDA, m) {
  m.impl("cross_entropy_fwd", &ce_fwd_cuda);
  m.impl("cross_entropy_fwd_inplace", &ce_fwd_inplace_cuda);
  m.impl("cross_entropy_scale_grad_", &ce_scale_grad_cuda);
  m.impl("cross_entropy_regrad_", &ce_regrad_cuda);
}

}  // namespace gpt_kernels
