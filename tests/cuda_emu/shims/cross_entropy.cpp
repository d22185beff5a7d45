// C entry points for the emulated cross-entropy kernels: fill CeForwardArgs as
// csrc/cuda/cross_entropy_launcher.cpp does and call ce_forward / ce_regrad / ce_scale_grad.
// Buffers are allocated by the caller (tests/cuda_emu/__init__.py) through emu_alloc.
#include "cross_entropy_cuda.h"

using namespace gpt_kernels::cuda;

extern "C" {
GK_EMU_API int emu_ce_forward(const void* logits, void* grad, const int64_t* targets, void* row_loss,
                              void* out, int* counts, int64_t N, int64_t V, int64_t ignore_index,
                              int reduction, int dtype) {
  CeForwardArgs a{};
  a.logits = logits;
  a.grad = grad;
  a.targets = targets;
  a.row_loss = row_loss;
  a.out = out;
  a.counts = counts;
  a.N = N;
  a.V = V;
  a.ignore_index = ignore_index;
  a.reduction = reduction;
  a.dtype = dtype;
  return ce_forward(a, nullptr);
}

// The 16-bit backward's regrad, as ce_regrad_cuda fills the arguments: no row loss, no out.
GK_EMU_API int emu_ce_regrad(const void* logits, void* grad, const int64_t* targets, int* counts, int64_t N,
                             int64_t V, int64_t ignore_index, int reduction, int dtype, const void* factors,
                             int per_row) {
  CeForwardArgs a{};
  a.logits = logits;
  a.grad = grad;
  a.targets = targets;
  a.row_loss = nullptr;
  a.out = nullptr;
  a.counts = counts;
  a.N = N;
  a.V = V;
  a.ignore_index = ignore_index;
  a.reduction = reduction;
  a.dtype = dtype;
  return ce_regrad(a, factors, per_row != 0, nullptr);
}

GK_EMU_API int emu_ce_scale_grad(void* grad, const void* scales, int per_row, const int64_t* targets,
                                 int64_t N, int64_t V, int64_t ignore_index, int dtype) {
  return ce_scale_grad(grad, scales, per_row != 0, targets, N, V, ignore_index, dtype, nullptr);
}

GK_EMU_API int emu_ce_counts_size() { return kCeCountsSize; }
}
