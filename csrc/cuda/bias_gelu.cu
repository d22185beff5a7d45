// CUDA kernels of bias_gelu, the twin of csrc/bias_gelu.cpp (same formulas from gelu_math.h,
// same 32-row blocking of the bias gradient; the two agree to rounding, not bit for bit: nvcc
// picks its own FMA contractions, and the partial rows are added in another order):
//   forward   out[r, c] = gelu(x[r, c] + bias[c])
//   backward  grad_x[r, c] = grad_out[r, c] * gelu'(x[r, c] + bias[c]);
//             partial[blk, c] = sum of grad_x[r, c] over the 32 rows r of block blk (fp32),
//             grad_bias[c] = sum over blk of partial[blk, c] (a second, small kernel)
//   gelu is the exact (erf) GELU, or its tanh approximation when p.approximate is 1 (one flag
//   for every thread of the launch: the branch does not diverge).
// Mapping: forward, one thread block per row (grid-stride over rows), threads across the row's
// columns, so a warp reads 32 adjacent elements (rows narrower than 256 leave threads idle; the
// model's are ff_dim = 4 x embed_dim wide, 1536 by default). Backward, a thread per (column,
// 32-row block): it walks down its column, reading grad_out and x coalesced across the warp,
// and keeps its partial sum in a register; no atomics, so the bias gradient is the same in
// every run.
// The reduction kernel gives each column 8 threads that stride over the partial rows, then adds
// their 8 sums in order through shared memory.
// Memory traffic: forward reads x, writes out; backward reads grad_out and x, writes grad_x,
// plus the partial rows (1/32 of a row per row, fp32). Bound: memory bandwidth; the erf
// (a divide, one exp, ~20 FMAs) is well under the H100's FP32 rate per byte moved.
//
// Check: python -m pytest tests/test_bias_gelu.py tests/test_emulated.py
// Bench: python bench/bias_gelu_bench.py --device cuda
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "../gelu_math.h"
#include "common.cuh"
#include "bias_gelu_cuda.h"

namespace gpt_kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kRowBlock = kBiasGeluRowBlock;
constexpr int kReduceCols = 32, kReduceGroups = kThreads / kReduceCols;

template <typename T>
__global__ void __launch_bounds__(kThreads)
bias_gelu_forward_kernel(const T* __restrict__ x, const T* __restrict__ bias, T* __restrict__ out,
                         int64_t rows, int64_t n, bool tanh) {
  using A = typename Acc<T>::type;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * n;
    T* outr = out + r * n;
    for (int64_t c = threadIdx.x; c < n; c += blockDim.x) {
      const A u = to_acc(xr[c]) + to_acc(bias[c]);
      outr[c] = from_acc<T>(gelu_math::gelu_any(u, tanh));
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
bias_gelu_backward_kernel(const T* __restrict__ grad, const T* __restrict__ x,
                          const T* __restrict__ bias, T* __restrict__ grad_x,
                          typename Acc<T>::type* __restrict__ partial, int64_t rows, int64_t n,
                          bool tanh) {
  using A = typename Acc<T>::type;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= n) return;  // no shared memory or barrier in this kernel
  const A b = to_acc(bias[c]);
  const int64_t blocks = (rows + kRowBlock - 1) / kRowBlock;
  for (int64_t blk = blockIdx.y; blk < blocks; blk += gridDim.y) {
    const int64_t r_end = (blk + 1) * kRowBlock < rows ? (blk + 1) * kRowBlock : rows;
    A acc = A(0);
#pragma unroll 4
    for (int64_t r = blk * kRowBlock; r < r_end; ++r) {
      const int64_t i = r * n + c;
      const A gx = to_acc(grad[i]) * gelu_math::gelu_any_grad(to_acc(x[i]) + b, tanh);
      grad_x[i] = from_acc<T>(gx);
      acc += gx;
    }
    partial[blk * n + c] = acc;
  }
}

// grad_bias[c] = sum over blk of partial[blk, c]. Block: kReduceCols columns x kReduceGroups
// groups; group g adds the partial rows g, g + 8, g + 16, ...; then group 0 adds the 8 sums.
template <typename T>
__global__ void __launch_bounds__(kThreads)
bias_grad_reduce_kernel(const typename Acc<T>::type* __restrict__ partial, T* __restrict__ grad_bias,
                        int64_t blocks, int64_t n) {
  using A = typename Acc<T>::type;
  __shared__ A sums[kReduceGroups][kReduceCols];
  const int lane = threadIdx.x % kReduceCols, group = threadIdx.x / kReduceCols;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kReduceCols + lane;
  A s = A(0);
  if (c < n) {
    for (int64_t blk = group; blk < blocks; blk += kReduceGroups) s += partial[blk * n + c];
  }
  sums[group][lane] = s;
  __syncthreads();
  if (group == 0 && c < n) {
    A total = sums[0][lane];
#pragma unroll
    for (int g = 1; g < kReduceGroups; ++g) total += sums[g][lane];
    grad_bias[c] = from_acc<T>(total);
  }
}

unsigned clamp_grid(int64_t want, int64_t cap) {
  return static_cast<unsigned>(want < cap ? want : cap);
}

template <typename T>
cudaError_t forward(const BiasGeluParams& p, cudaStream_t stream) {
  const unsigned grid = clamp_grid(p.rows, int64_t(1) << 20);
  bias_gelu_forward_kernel<T><<<grid, kThreads, 0, stream>>>(
      static_cast<const T*>(p.x), static_cast<const T*>(p.bias), static_cast<T*>(p.out), p.rows, p.n,
      p.approximate != 0);
  return cudaGetLastError();
}

template <typename T>
cudaError_t backward(const BiasGeluParams& p, cudaStream_t stream) {
  using A = typename Acc<T>::type;
  const int64_t blocks = (p.rows + kRowBlock - 1) / kRowBlock;
  const dim3 grid(clamp_grid((p.n + kThreads - 1) / kThreads, int64_t(1) << 30), clamp_grid(blocks, 65535));
  bias_gelu_backward_kernel<T><<<grid, kThreads, 0, stream>>>(
      static_cast<const T*>(p.grad_out), static_cast<const T*>(p.x), static_cast<const T*>(p.bias),
      static_cast<T*>(p.out), static_cast<A*>(p.partial), p.rows, p.n, p.approximate != 0);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const unsigned reduce_grid = clamp_grid((p.n + kReduceCols - 1) / kReduceCols, int64_t(1) << 30);
  bias_grad_reduce_kernel<T><<<reduce_grid, kThreads, 0, stream>>>(
      static_cast<const A*>(p.partial), static_cast<T*>(p.grad_bias), blocks, p.n);
  return cudaGetLastError();
}

}  // namespace

cudaError_t bias_gelu_forward_cuda(const BiasGeluParams& p, cudaStream_t stream) {
  return dispatch_dtype(p.dtype, [&](auto t) { return forward<decltype(t)>(p, stream); });
}

cudaError_t bias_gelu_backward_cuda(const BiasGeluParams& p, cudaStream_t stream) {
  return dispatch_dtype(p.dtype, [&](auto t) { return backward<decltype(t)>(p, stream); });
}

}  // namespace gpt_kernels
