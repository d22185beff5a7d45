// Fused cross-entropy, CUDA kernels: the twin of the CPU kernel in csrc/cross_entropy.cpp (same
// formulas; read that header first). Torch-free, so it compiles in seconds; the launcher,
// cross_entropy_launcher.cpp, checks the arguments, allocates and registers the op.
//
//   loss_i = logsumexp(x_i) - x_i[t_i];   dloss/dx_ij = scale * (softmax(x_i)_j - [j == t_i])
//
// Kernels, all on the caller's stream, none needing a host round trip:
//   ce_count_kernel     kCeCountBlocks blocks count the rows not ignored and the targets outside
//                       [0, V) (per-block partial counts: no atomics, no memset)
//   ce_forward_kernel   one block per row (128 to 512 threads by V). Pass 1: an online (max, sum
//                       of exp) per thread over 16-byte vectors of the row, fp32 arithmetic,
//                       merged across the block by warp shuffles; loss = max + log(sum) - x_t.
//                       Pass 2 (gradient wanted): re-reads the row (from L2) and writes
//                       g_j = (exp(x_j - lse) - [j == t]) * scale with 16-byte stores; scale =
//                       1/n_valid for "mean", from the counts, so the gradient is final for an
//                       upstream gradient of 1. An ignored row: loss 0, zero gradient; a target
//                       out of range: nan (never a read outside the row), and the launcher raises.
//   ce_finalize_kernel  one block sums the row losses in a fixed order (deterministic, fp64
//                       accumulation), divides by n_valid for "mean" (0/0 = nan, as torch).
//   ce_scale_kernel     the fp32/fp64 backward, rows scaled in place; a block returns at once
//                       where the factor is exactly 1 (the usual mean loss).
//   regrad              ce_forward_kernel with factors, the 16-bit backward: rescaling a stored
//                       16-bit gradient would round twice (and (p - y) / N below fp16's 2^-24 is
//                       gone before a GradScaler's factor could save it), so rows whose factor is
//                       not 1 are recomputed from the logits and rounded once.
// A row not 16-byte aligned starts with a scalar head; a scalar tail follows the last vector.
// Memory traffic, N x V logits of E bytes: with gradient 2*N*V*E from DRAM (the floor for a
// loss whose gradient must be written), loss only N*V*E. Offsets are 64-bit.
//
// Check: python -m pytest tests/test_cross_entropy.py tests/test_emulated.py
// Bench: python bench/loss_bench.py --device cuda
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"
#include "cross_entropy_cuda.h"

namespace gpt_kernels {
namespace cuda {
namespace {

// exp(v) as 2^(v * log2 e): one FMUL and one MUFU.EX2 for fp32; exp2(-inf) = 0.
__device__ __forceinline__ float exp_(float v) { return exp2f(v * 1.4426950408889634f); }
__device__ __forceinline__ double exp_(double v) { return exp(v); }
__device__ __forceinline__ float log_(float v) { return logf(v); }
__device__ __forceinline__ double log_(double v) { return log(v); }
template <typename A> __device__ __forceinline__ A neg_inf();
template <> __device__ __forceinline__ float neg_inf<float>() { return -__int_as_float(0x7f800000); }
template <> __device__ __forceinline__ double neg_inf<double>() {
  return -__longlong_as_double(0x7ff0000000000000LL);
}

// 16 bytes of T, loaded and stored as one 128-bit access.
template <typename T> struct alignas(16) Vec16 {
  static constexpr int n = 16 / sizeof(T);
  T v[n];
};

// Whole 16-byte accesses (ld/st.global.v4), written as uint4 so the compiler cannot split them.
template <typename T>
__device__ __forceinline__ Vec16<T> load16(const T* p) {
  Vec16<T> r;
  *reinterpret_cast<uint4*>(&r) = *reinterpret_cast<const uint4*>(p);
  return r;
}
template <typename T>
__device__ __forceinline__ void store16(T* p, const Vec16<T>& r) {
  *reinterpret_cast<uint4*>(p) = *reinterpret_cast<const uint4*>(&r);
}

// Online softmax state of one thread: running max m and sum of exp(x - m).
template <typename A> struct MaxSum {
  A m, s;
};

// Folds a group of values with maximum vmax and the values x[0..n) into (m, s). The reference
// point is 0 while everything seen is -inf, so -inf - -inf never makes a nan.
template <typename A>
__device__ __forceinline__ MaxSum<A> merge(MaxSum<A> a, MaxSum<A> b) {
  const A m = fmax(a.m, b.m);
  const A ref = m == neg_inf<A>() ? A(0) : m;
  return {m, a.s * exp_(a.m - ref) + b.s * exp_(b.m - ref)};
}

template <typename A>
__device__ __forceinline__ MaxSum<A> warp_merge(MaxSum<A> st) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    MaxSum<A> o{__shfl_xor_sync(0xffffffffu, st.m, off), __shfl_xor_sync(0xffffffffu, st.s, off)};
    st = merge(st, o);
  }
  return st;
}

// Where the 16-byte-aligned body of a row starts (in elements) and how many vectors it holds.
template <typename T>
__device__ __forceinline__ void row_split(const T* row, int64_t V, int64_t& head, int64_t& nvec) {
  constexpr int n = Vec16<T>::n;
  const int mis = static_cast<int>((reinterpret_cast<uintptr_t>(row) & 15) / sizeof(T));
  head = mis == 0 ? 0 : n - mis;
  if (head > V) head = V;
  nvec = (V - head) / n;
}

__device__ __forceinline__ int sum_counts(const int* counts, int which) {
  // every thread of the block gets sum_b counts[2b + which]; kCeCountBlocks <= 64
  int c = 0;
  for (int b = 0; b < kCeCountBlocks; ++b) c += counts[2 * b + which];
  return c;
}

__global__ void ce_count_kernel(const int64_t* __restrict__ targets, int64_t N, int64_t V,
                                int64_t ignore_index, int* __restrict__ counts) {
  int valid = 0, bad = 0;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < N;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t t = targets[i];
    if (t == ignore_index) continue;
    if (t < 0 || t >= V) ++bad; else ++valid;
  }
  for (int off = 16; off > 0; off >>= 1) {
    valid += __shfl_xor_sync(0xffffffffu, valid, off);
    bad += __shfl_xor_sync(0xffffffffu, bad, off);
  }
  __shared__ int sh[2][32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) { sh[0][warp] = valid; sh[1][warp] = bad; }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < (int)blockDim.x / 32; ++w) { valid += sh[0][w]; bad += sh[1][w]; }
    counts[2 * blockIdx.x] = valid;
    counts[2 * blockIdx.x + 1] = bad;
  }
}

// __launch_bounds__(BLOCK, 1024 / BLOCK): at least 1024 threads resident per SM (<= 64
// registers), so two or more blocks share an SM and one block's barriers do not leave it idle.
template <typename T, int BLOCK>
__global__ void __launch_bounds__(BLOCK, 1024 / BLOCK)
ce_forward_kernel(const T* logits, T* grad, const int64_t* __restrict__ targets,
                  typename Acc<T>::type* __restrict__ row_loss, const int* __restrict__ counts,
                  const typename Acc<T>::type* __restrict__ factors, bool per_row,
                  int64_t N, int64_t V, int64_t ignore_index, int reduction) {
  using A = typename Acc<T>::type;
  using V16 = Vec16<T>;
  constexpr int n = V16::n;
  constexpr int U = sizeof(T) == 4 ? 4 : 2;  // 16-byte loads in flight per thread (<= 64 regs)
  constexpr int WARPS = BLOCK / 32;
  __shared__ MaxSum<A> sh_state[WARPS];
  __shared__ A sh_lse, sh_scale;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  // logits and grad are not __restrict__: grad may be the logits themselves (in place). Every
  // element is read (pass 1, pass 2) by the thread that later writes it, and x_t is read before
  // the barrier that precedes any write.
  // Regrad mode (factors != null, the float16 backward): no loss is written, and a row whose
  // upstream factor is exactly 1 keeps the gradient the forward wrote (for the usual mean
  // loss.backward() every block returns here; only the small count kernel ran before). The
  // same branch for every thread of the block.
  if (factors != nullptr && !per_row && factors[0] == A(1)) return;
  if (tid == 0) sh_scale = reduction == 1 ? A(1) / A(sum_counts(counts, 0)) : A(1);
  __syncthreads();
  const A base_scale = sh_scale;  // 1/n_valid for "mean" (inf when no row counts: then unused)

  for (int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    const T* x = logits + row * V;
    T* g = grad ? grad + row * V : nullptr;
    const int64_t t = targets[row];
    const A factor = factors != nullptr ? factors[per_row ? row : 0] : A(1);
    if (factors != nullptr && (factor == A(1) || t == ignore_index || t < 0 || t >= V)) continue;
    const A scale = base_scale * factor;
    if (t == ignore_index || t < 0 || t >= V) {  // the same for the whole block
      const bool ignored = t == ignore_index;
      const A fill = ignored ? A(0) : A(NAN);
      if (tid == 0 && row_loss) row_loss[row] = fill;
      if (g) for (int64_t j = tid; j < V; j += BLOCK) g[j] = from_acc<T>(fill);
      continue;
    }
    const A xt = tid == 0 ? to_acc(x[t]) : A(0);
    int64_t head, nvec;
    row_split(x, V, head, nvec);
    const int64_t tail = head + nvec * n;
    const T* xb = x + head;  // the 16-byte-aligned body: vector k is xb[k*n .. k*n + n)

    // Pass 1: online max and sum of exp.
    MaxSum<A> st{neg_inf<A>(), A(0)};
    for (int64_t j = tid; j < head; j += BLOCK) st = merge(st, MaxSum<A>{to_acc(x[j]), A(1)});
    for (int64_t j = tail + tid; j < V; j += BLOCK) st = merge(st, MaxSum<A>{to_acc(x[j]), A(1)});
    for (int64_t k0 = tid; k0 < nvec; k0 += (int64_t)BLOCK * U) {
      V16 r[U];
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (k0 + u * BLOCK < nvec) r[u] = load16(xb + (k0 + u * BLOCK) * n);
#pragma unroll
      for (int u = 0; u < U; ++u) {
        if (k0 + u * BLOCK >= nvec) break;
        A vmax = to_acc(r[u].v[0]);
#pragma unroll
        for (int e = 1; e < n; ++e) vmax = fmax(vmax, to_acc(r[u].v[e]));
        const A m = fmax(st.m, vmax);
        const A ref = m == neg_inf<A>() ? A(0) : m;
        A s = st.s * exp_(st.m - ref);
#pragma unroll
        for (int e = 0; e < n; ++e) s += exp_(to_acc(r[u].v[e]) - ref);
        st = {m, s};
      }
    }
    st = warp_merge(st);
    if (lane == 0) sh_state[warp] = st;
    __syncthreads();
    if (warp == 0) {
      st = lane < WARPS ? sh_state[lane] : MaxSum<A>{neg_inf<A>(), A(0)};
      st = warp_merge(st);
      if (lane == 0) {
        const A lse = st.m + log_(st.s);
        sh_lse = lse;
        if (row_loss) row_loss[row] = lse - xt;
      }
    }
    __syncthreads();
    const A lse = sh_lse;

    // Pass 2: the gradient, written once.
    if (g) {
      T* gb = g + head;  // 16-byte aligned too: g and x share alignment (launcher's promise)
      for (int64_t j = tid; j < head; j += BLOCK)
        g[j] = from_acc<T>(exp_(to_acc(x[j]) - lse) * scale - (j == t ? scale : A(0)));
      for (int64_t j = tail + tid; j < V; j += BLOCK)
        g[j] = from_acc<T>(exp_(to_acc(x[j]) - lse) * scale - (j == t ? scale : A(0)));
      for (int64_t k0 = tid; k0 < nvec; k0 += (int64_t)BLOCK * U) {
        V16 r[U];
#pragma unroll
        for (int u = 0; u < U; ++u)
          if (k0 + u * BLOCK < nvec) r[u] = load16(xb + (k0 + u * BLOCK) * n);
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const int64_t k = k0 + u * BLOCK;
          if (k >= nvec) break;
          const int64_t j0 = head + k * n;  // row index of element 0 of this vector
          V16 o;
#pragma unroll
          for (int e = 0; e < n; ++e)
            o.v[e] = from_acc<T>(exp_(to_acc(r[u].v[e]) - lse) * scale -
                                 (j0 + e == t ? scale : A(0)));
          store16(gb + k * n, o);
        }
      }
    }
    __syncthreads();  // sh_state / sh_lse are reused by the next row of this block
  }
}

// One block sums the per-row losses (fixed order: deterministic) and totals the counts.
template <typename T>
__global__ void __launch_bounds__(1024)
ce_finalize_kernel(const typename Acc<T>::type* __restrict__ row_loss,
                   typename Acc<T>::type* __restrict__ out,
                   int* __restrict__ counts, int64_t N, int reduction) {
  __shared__ double sh[32];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  if (tid < 2) counts[2 * kCeCountBlocks + tid] = sum_counts(counts, tid);
  if (reduction == 0) return;
  double s = 0;
  for (int64_t i = tid; i < N; i += blockDim.x) s += (double)row_loss[i];
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  if (lane == 0) sh[warp] = s;
  __syncthreads();
  if (warp == 0) {
    s = lane < (int)blockDim.x / 32 ? sh[lane] : 0.0;
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0) {
      if (reduction == 1) s /= (double)sum_counts(counts, 0);  // 0/0 = nan when all ignored
      out[0] = static_cast<typename Acc<T>::type>(s);
    }
  }
}

template <typename T, int BLOCK>
__global__ void __launch_bounds__(BLOCK)
ce_scale_kernel(T* __restrict__ grad, const typename Acc<T>::type* __restrict__ scales,
                bool per_row, const int64_t* __restrict__ targets, int64_t N, int64_t V,
                int64_t ignore_index) {
  using A = typename Acc<T>::type;
  using V16 = Vec16<T>;
  constexpr int n = V16::n;
  if (!per_row && scales[0] == A(1)) return;  // the usual loss.backward(): nothing to do
  for (int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    const A s = scales[per_row ? row : 0];
    if (s == A(1) || targets[row] == ignore_index) continue;  // ignored rows stay exactly 0
    T* g = grad + row * V;
    int64_t head, nvec;
    row_split(g, V, head, nvec);
    const int64_t tail = head + nvec * n;
    for (int64_t j = threadIdx.x; j < head; j += BLOCK) g[j] = from_acc<T>(to_acc(g[j]) * s);
    for (int64_t j = tail + threadIdx.x; j < V; j += BLOCK) g[j] = from_acc<T>(to_acc(g[j]) * s);
    T* gb = g + head;
    for (int64_t k = threadIdx.x; k < nvec; k += BLOCK) {
      V16 r = load16(gb + k * n);
#pragma unroll
      for (int e = 0; e < n; ++e) r.v[e] = from_acc<T>(to_acc(r.v[e]) * s);
      store16(gb + k * n, r);
    }
  }
}

constexpr int64_t kMaxGrid = 2147483647;

// factors == null: the forward. Otherwise the 16-bit backward's regrad (no loss written).
template <typename T>
cudaError_t forward_typed(const CeForwardArgs& a, const void* factors, bool per_row,
                          cudaStream_t stream) {
  using A = typename Acc<T>::type;
  const T* x = static_cast<const T*>(a.logits);
  T* g = static_cast<T*>(a.grad);
  A* row_loss = static_cast<A*>(a.row_loss);
  ce_count_kernel<<<kCeCountBlocks, 1024, 0, stream>>>(a.targets, a.N, a.V, a.ignore_index,
                                                      a.counts);
  // threads: about one 16-byte vector each for small V, else 512 (two blocks per SM)
  const int64_t nvec = a.V / Vec16<T>::n;
  const unsigned grid = static_cast<unsigned>(a.N < kMaxGrid ? a.N : kMaxGrid);
#define GPT_CE_LAUNCH(B)                                                                      \
  ce_forward_kernel<T, B><<<grid, B, 0, stream>>>(x, g, a.targets, row_loss, a.counts,        \
                                                  static_cast<const A*>(factors), per_row, a.N, \
                                                  a.V, a.ignore_index, a.reduction)
  if (nvec <= 128) GPT_CE_LAUNCH(128);
  else if (nvec <= 256) GPT_CE_LAUNCH(256);
  else GPT_CE_LAUNCH(512);
#undef GPT_CE_LAUNCH
  if (factors == nullptr)
    ce_finalize_kernel<T><<<1, 1024, 0, stream>>>(row_loss, static_cast<A*>(a.out), a.counts,
                                                  a.N, a.reduction);
  return cudaGetLastError();
}

template <typename T>
cudaError_t scale_typed(void* grad, const void* scales, bool per_row, const int64_t* targets,
                        int64_t N, int64_t V, int64_t ignore_index, cudaStream_t stream) {
  using A = typename Acc<T>::type;
  if (N == 0) return cudaSuccess;  // a grid of 0 blocks is a launch error
  const unsigned grid = static_cast<unsigned>(N < 65536 ? N : 65536);  // rows loop inside
  ce_scale_kernel<T, 256><<<grid, 256, 0, stream>>>(static_cast<T*>(grad),
                                                    static_cast<const A*>(scales), per_row,
                                                    targets, N, V, ignore_index);
  return cudaGetLastError();
}

}  // namespace

cudaError_t ce_forward(const CeForwardArgs& args, cudaStream_t stream) {
  return dispatch_dtype(args.dtype, [&](auto t) {
    return forward_typed<decltype(t)>(args, nullptr, false, stream);
  });
}

cudaError_t ce_regrad(const CeForwardArgs& args, const void* factors, bool per_row,
                      cudaStream_t stream) {
  if (factors == nullptr || args.grad == nullptr) return cudaErrorInvalidValue;
  return dispatch_dtype(args.dtype, [&](auto t) {
    return forward_typed<decltype(t)>(args, factors, per_row, stream);
  });
}

cudaError_t ce_scale_grad(void* grad, const void* scales, bool per_row, const int64_t* targets,
                          int64_t N, int64_t V, int64_t ignore_index, int dtype,
                          cudaStream_t stream) {
  return dispatch_dtype(dtype, [&](auto t) {
    return scale_typed<decltype(t)>(grad, scales, per_row, targets, N, V, ignore_index, stream);
  });
}

}  // namespace cuda
}  // namespace gpt_kernels
