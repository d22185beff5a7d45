// Interface between the torch-free CUDA kernels of causal attention
// (causal_attention.cu) and their launcher (causal_attention_launcher.cpp, which includes torch).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace gpt_kernels {

struct AttentionParams {
  // inputs, (B, H, T, D) with unit stride along D and row strides (elements) per b, h, t;
  // every row starts 16-byte aligned (the launcher makes a contiguous copy otherwise)
  const void* q;
  const void* k;
  const void* v;
  int64_t q_stride[3], k_stride[3], v_stride[3];
  // forward outputs / backward inputs: out contiguous (B, H, T, D), lse (B, H, T) fp32
  void* out;
  float* lse;
  // backward only: grad_out (strided like q), delta (B, H, T) fp32 scratch, dq_accum
  // (B, H, T, D) fp32 zeroed scratch, dq, dk, dv contiguous (B, H, T, D)
  const void* dout;
  int64_t do_stride[3];
  float* delta;
  float* dq_accum;
  void* dq;
  void* dk;
  void* dv;
  int B, H, T, D;
  float scale;       // softmax scale (1/sqrt(D) by default)
  float keep_scale;  // 1 / (1 - p)
  bool dropout;        // p > 0: apply the dropout mask (else the p = 0 kernels run)
  uint32_t threshold;  // dropout threshold (philox_dropout.h)
  uint64_t seed, offset;
};

// dtype: true for bfloat16, false for float16. Return the launch error (cudaSuccess if none).
cudaError_t causal_attention_forward_cuda(const AttentionParams& p, bool bf16, cudaStream_t stream);
cudaError_t causal_attention_backward_cuda(const AttentionParams& p, bool bf16, cudaStream_t stream);
// Dynamic shared memory per block of the forward or backward kernel for head size D (0 for
// an unsupported D); above 99 KiB (D = 128) it exceeds what consumer GPUs (sm_86/89/120) allow.
size_t causal_attention_smem_bytes(int D, bool backward);

}  // namespace gpt_kernels
