// Interface between the torch-free CUDA kernels of dropout_add (dropout_add.cu) and their
// launcher (dropout_add_launcher.cpp, which includes torch). Only CUDA runtime types and
// torch-free headers here.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "../common_hd.h"

namespace gpt_kernels {

struct DropoutAddParams {
  const void* src;       // forward: x; backward: grad_out. Contiguous, n elements.
  const void* residual;  // forward only, or null (out = dropout(x)); contiguous, out's dtype
  void* dst;             // forward: out; backward: grad_x. Contiguous, n elements.
  int64_t n;
  int src_dtype, dst_dtype;  // DType (../common_hd.h); the launcher passes only the pairs the kernels take
  bool dropout;              // p > 0 (else every element is kept, keep_scale 1)
  uint32_t threshold;        // philox_dropout.h: dropout_threshold(p)
  double keep_scale;         // 1 / (1 - p)
  uint64_t seed, offset;
};

// forward: dst = residual + src * Z; backward: dst = src * Z. Z from dropout_add_keep8
// (philox_dropout.h). Return the launch error (cudaSuccess if none).
cudaError_t dropout_add_forward_cuda(const DropoutAddParams& p, cudaStream_t stream);
cudaError_t dropout_add_backward_cuda(const DropoutAddParams& p, cudaStream_t stream);

}  // namespace gpt_kernels
