// Interface between the torch-free CUDA kernels of bias_gelu (bias_gelu.cu) and their launcher
// (bias_gelu_launcher.cpp, which includes torch). Only CUDA runtime types and torch-free
// headers here.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "../common_hd.h"
#include "../gelu_math.h"  // kBiasGeluRowBlock

namespace gpt_kernels {

struct BiasGeluParams {
  const void* x;         // (rows, n) contiguous
  const void* bias;      // (n,)
  const void* grad_out;  // backward: (rows, n) contiguous
  void* out;             // forward: out; backward: grad_x. (rows, n) contiguous
  void* grad_bias;       // backward: (n,)
  void* partial;         // backward workspace: (ceil(rows / kBiasGeluRowBlock), n) fp32 (fp64 for fp64)
  int64_t rows, n;
  int dtype;             // DType (../common_hd.h) of x, bias, grad_out, out, grad_x, grad_bias
  int approximate;       // 0: the exact (erf) GELU; 1: the tanh approximation (a zeroed struct
                         // means exact)
};

// Return the launch error (cudaSuccess if none). rows * n > 0.
cudaError_t bias_gelu_forward_cuda(const BiasGeluParams& p, cudaStream_t stream);
cudaError_t bias_gelu_backward_cuda(const BiasGeluParams& p, cudaStream_t stream);

}  // namespace gpt_kernels
