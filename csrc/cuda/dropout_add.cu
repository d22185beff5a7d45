// CUDA kernels of dropout_add, the twin of csrc/dropout_add.cpp (same formulas, same mask):
//   forward   out[n] = residual[n] + x[n] * Z[n]     (out = x * Z with no residual)
//   backward  grad_x[n] = grad_out[n] * Z[n]
// Z[n] = 1/(1-p) if bit n % 8 of dropout_add_keep8(seed, offset, n / 8) is set, else 0.
//
// Mapping: one thread per group of 8 elements, i.e. one Philox call per thread (10 rounds of
// two 32-bit multiplies; the ALU cost is hidden behind the memory traffic at these sizes), in a
// grid-stride loop. The 8 elements of a group are moved with 16-byte loads and stores when
// every pointer is 16-byte aligned (8 elements are 16, 32 or 64 bytes), element by element
// otherwise and in the last, partial group. Arithmetic in fp32 (fp64 for fp64).
// Memory traffic: forward reads x and residual, writes out; backward reads grad_out, writes
// grad_x; the mask itself is never in memory. Bound: copy bandwidth. Why a counter-based mask:
// the backward regenerates it instead of reading a stored one (one tensor less to write and
// read), and the CPU kernel draws the very same mask for the same (seed, offset).
//
// Check: python -m pytest tests/test_dropout_add.py tests/test_emulated.py
// Bench: python bench/dropout_add_bench.py --device cuda
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "../philox_dropout.h"
#include "common.cuh"
#include "dropout_add_cuda.h"

namespace gpt_kernels {
namespace {

constexpr int kThreads = 256;

// The 8 elements of a group as 16-byte words (8 * sizeof(T) is a multiple of 16 for T >= 2 bytes).
template <typename T>
struct alignas(16) Group8 {
  T v[8];
};

template <typename T>
__device__ __forceinline__ Group8<T> load8(const T* p) {
  Group8<T> g;
  const uint4* src = reinterpret_cast<const uint4*>(p);
  uint4* dst = reinterpret_cast<uint4*>(&g);
#pragma unroll
  for (int w = 0; w < static_cast<int>(sizeof(Group8<T>) / 16); ++w) dst[w] = src[w];
  return g;
}

template <typename T>
__device__ __forceinline__ void store8(T* p, const Group8<T>& g) {
  const uint4* src = reinterpret_cast<const uint4*>(&g);
  uint4* dst = reinterpret_cast<uint4*>(p);
#pragma unroll
  for (int w = 0; w < static_cast<int>(sizeof(Group8<T>) / 16); ++w) dst[w] = src[w];
}

// SrcT: x (forward) or grad_out (backward); DstT: out (and residual) or grad_x.
template <typename SrcT, typename DstT, bool kResidual>
__global__ void __launch_bounds__(kThreads)
dropout_add_kernel(const SrcT* __restrict__ src, const DstT* __restrict__ residual,
                   DstT* __restrict__ dst, int64_t n, bool dropout, uint32_t threshold,
                   typename Acc<DstT>::type keep_scale, uint64_t seed, uint64_t offset, bool aligned) {
  using A = typename Acc<DstT>::type;
  const int64_t groups = (n + 7) / 8;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < groups; g += stride) {
    const uint32_t bits = dropout ? dropout_add_keep8(seed, offset, static_cast<uint64_t>(g), threshold) : 0xFFu;
    const int64_t n0 = g * 8;
    if (aligned && n0 + 8 <= n) {
      const Group8<SrcT> s = load8(src + n0);
      Group8<DstT> r;
      if constexpr (kResidual) r = load8(residual + n0);
      Group8<DstT> d;
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        // x * 0, not 0, where dropped: inf and NaN propagate as on the CPU and in torch
        A v = static_cast<A>(to_acc(s.v[e])) * (((bits >> e) & 1u) ? keep_scale : A(0));
        if constexpr (kResidual) v = static_cast<A>(to_acc(r.v[e])) + v;
        d.v[e] = from_acc<DstT>(v);
      }
      store8(dst + n0, d);
    } else {
      for (int e = 0; e < 8 && n0 + e < n; ++e) {
        A v = static_cast<A>(to_acc(src[n0 + e])) * (((bits >> e) & 1u) ? keep_scale : A(0));
        if constexpr (kResidual) v = static_cast<A>(to_acc(residual[n0 + e])) + v;
        dst[n0 + e] = from_acc<DstT>(v);
      }
    }
  }
}

bool aligned16(const void* p) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <typename SrcT, typename DstT>
cudaError_t launch(const DropoutAddParams& p, bool with_residual, cudaStream_t stream) {
  const int64_t groups = (p.n + 7) / 8;
  const int64_t blocks64 = (groups + kThreads - 1) / kThreads;
  const unsigned blocks = static_cast<unsigned>(blocks64 < (1 << 20) ? blocks64 : (1 << 20));
  if (blocks == 0) return cudaSuccess;
  const bool aligned = aligned16(p.src) && aligned16(p.residual) && aligned16(p.dst);
  using A = typename Acc<DstT>::type;
  const auto* src = static_cast<const SrcT*>(p.src);
  const auto* residual = static_cast<const DstT*>(p.residual);
  auto* dst = static_cast<DstT*>(p.dst);
  if (with_residual) {
    dropout_add_kernel<SrcT, DstT, true><<<blocks, kThreads, 0, stream>>>(
        src, residual, dst, p.n, p.dropout, p.threshold, static_cast<A>(p.keep_scale), p.seed,
        p.offset, aligned);
  } else {
    dropout_add_kernel<SrcT, DstT, false><<<blocks, kThreads, 0, stream>>>(
        src, nullptr, dst, p.n, p.dropout, p.threshold, static_cast<A>(p.keep_scale), p.seed,
        p.offset, aligned);
  }
  return cudaGetLastError();
}

// The dtype pairs of csrc/dropout_add.h: (same, same), and a bf16/f16 x with fp32 out. In the
// backward the roles swap: src = grad_out (fp32), dst = grad_x (bf16/f16).
cudaError_t dispatch(const DropoutAddParams& p, bool with_residual, cudaStream_t stream) {
  const int s = p.src_dtype, d = p.dst_dtype;
  if (s == d) {
    return dispatch_dtype(s, [&](auto t) {
      return launch<decltype(t), decltype(t)>(p, with_residual, stream);
    });
  }
  if (s == kBF16 && d == kF32) return launch<__nv_bfloat16, float>(p, with_residual, stream);
  if (s == kF16 && d == kF32) return launch<__half, float>(p, with_residual, stream);
  if (s == kF32 && d == kBF16) return launch<float, __nv_bfloat16>(p, false, stream);
  if (s == kF32 && d == kF16) return launch<float, __half>(p, false, stream);
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t dropout_add_forward_cuda(const DropoutAddParams& p, cudaStream_t stream) {
  return dispatch(p, p.residual != nullptr, stream);
}

cudaError_t dropout_add_backward_cuda(const DropoutAddParams& p, cudaStream_t stream) {
  return dispatch(p, false, stream);
}

}  // namespace gpt_kernels
