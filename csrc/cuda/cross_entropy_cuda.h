// The interface between the torch-free CUDA kernels (cross_entropy.cu, which compiles in
// seconds) and their torch launcher (cross_entropy_launcher.cpp). Only CUDA runtime types and
// torch-free headers here.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../common_hd.h"

namespace gpt_kernels {
namespace cuda {

// The target-count kernel writes (valid, bad) per block into counts[0 .. 2*kCeCountBlocks), and
// the finalize kernel the totals into counts[2*kCeCountBlocks], counts[2*kCeCountBlocks + 1].
constexpr int kCeCountBlocks = 64;
constexpr int kCeCountsSize = 2 * kCeCountBlocks + 2;

struct CeForwardArgs {
  const void* logits;       // (N, V) contiguous, dtype; its address is 16-byte aligned
  void* grad;               // (N, V) contiguous, same alignment as logits (may be logits), or null
  const int64_t* targets;   // (N,) contiguous
  void* row_loss;           // (N,) fp32 (fp64 for fp64 logits): per-row loss, 0 where ignored
  void* out;                // () fp32 (fp64 for fp64): the "mean" or "sum" loss (not for "none")
  int* counts;              // kCeCountsSize ints (scratch; no zeroing needed)
  int64_t N, V, ignore_index;
  int reduction;            // 0 none, 1 mean, 2 sum (as CeReduction in ../cross_entropy.h)
  int dtype;                // DType (../common_hd.h)
};

// count targets -> fused loss (+ gradient) kernel -> finalize (reduced loss, counts); all on
// `stream`, no host synchronisation. Returns the launch error, if any.
cudaError_t ce_forward(const CeForwardArgs& args, cudaStream_t stream);

// The 16-bit backward: for each row whose factor (factors[per_row ? i : 0], fp32; fp64 for fp64)
// is not exactly 1 and whose target is not ignored, args.grad's row = factor * d loss / d logits
// recomputed from args.logits (the forward's scale, 1/n_valid for "mean", times the factor) and
// rounded once; other rows are not touched. args.row_loss and args.out are not used.
cudaError_t ce_regrad(const CeForwardArgs& args, const void* factors, bool per_row,
                      cudaStream_t stream);

// grad (N, V) contiguous *= scales[per_row ? i : 0] for the rows whose target is not
// ignore_index; a row whose factor is exactly 1 is not touched. scales are fp32 (fp64 for fp64).
cudaError_t ce_scale_grad(void* grad, const void* scales, bool per_row, const int64_t* targets,
                          int64_t N, int64_t V, int64_t ignore_index, int dtype,
                          cudaStream_t stream);

}  // namespace cuda
}  // namespace gpt_kernels
