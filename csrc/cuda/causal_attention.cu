// Fused causal attention with in-kernel dropout, CUDA kernels: bf16 / fp16 in, fp32 accumulation
// on the tensor cores through WMMA m16n16k16. The twin of csrc/causal_attention.cpp (read its
// header for the formulas): same tiles (BR = BC = 64), same dropout mask (csrc/philox_dropout.h).
//
// Forward: one CTA of 4 warps per (query tile of 64 rows, h, b); warp w owns query rows 16w..
// 16w+15. Q is loaded to shared memory once; K, V tiles j0 <= i0 stream through it (tiles above
// the diagonal are never touched, nor the 16x16 blocks above it on the diagonal tile). Per tile:
// S_w = Q_w K^T (tensor cores, fp32 to shared); online softmax, 2 lanes per row (m, l in
// registers; P o Z to shared in 16 bits; O_w rows rescaled by exp(m - m')); O_w += (P o Z)_w V
// (O_w kept in shared memory as fp32). End: out = O / l, lse = m + log l (fp32).
// Backward: delta = rowsum(dO o O) (a preprocess kernel); one CTA per (key tile, h, b); warp w
// owns key rows 16w.. of dK, dV (fp32 fragments in registers across the loop) and, per query
// tile i0 >= j0, rows 16w.. of S = Q K^T and dP = dO V^T; then P = exp(scale S - lse), dS =
// P o (dP o Z - delta); dV_w += (P o Z)^T dO, dK_w += dS^T Q (A operands read column-major: the
// transposes are free); dQ_w = dS_w K, atomicAdd into an fp32 accumulator that a last kernel
// scales and writes as dq.
// Memory traffic: the forward reads q, k, v (k and v once per query tile, mostly from L2) and
// writes out, lse; the backward also reads dout, out and writes dq, dk, dv (+ the fp32 dq
// accumulator). Shared memory per CTA, D = 64: forward 70 KiB, backward 88.5 KiB (D = 128: 110,
// 120.5 KiB, over the 99 KiB of consumer GPUs: the launcher says so).
//
// Why WMMA with shared-memory staging rather than mma.sync fragments in registers: WMMA's
// accumulator layout is opaque, so the element-wise softmax/mask/dropout pass reads S from shared
// memory, where (i, j) of every element is plain index math, identical to the CPU kernel's. It
// costs an S/P round trip through shared memory per tile; written without a GPU, it is the
// version most likely right the first time. Register-resident mma.sync m16n8k16 (FlashAttention-
// 2's layout) is the next step.
//
// Check: python -m pytest tests/test_causal_attention.py (CUDA cases need a GPU), and
//        python -m pytest tests/test_emulated.py (this file under tests/cuda_emu, on the CPU)
// Bench: python bench/causal_attention_bench.py --device cuda
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <algorithm>
#include <cstdint>

#include "../philox_dropout.h"
#include "causal_attention_cuda.h"
#include "common.cuh"

namespace gpt_kernels {
namespace {

using namespace nvcuda;

constexpr int kTile = 64;      // BR = BC = 64
constexpr int kWarps = 4;      // 4 warps x 16 rows
constexpr int kThreads = kWarps * 32;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Shared-memory row pitches (elements). +8 halves / +4 floats stagger the rows across banks
// and keep every 16x16 WMMA tile 32-byte aligned (ldm multiple of 8 / 4 as WMMA requires).
template <int D> struct Pitch {
  static constexpr int kIn = D + 8;      // Q, K, V, dO tiles (16-bit)
  static constexpr int kS = kTile + 4;   // S, dP (fp32)
  static constexpr int kP = kTile + 8;   // P o Z, dS (16-bit)
  static constexpr int kO = D + 4;       // O accumulator / dQ, dK, dV staging (fp32)
};

// Copy rows row0 .. row0+63 of a (T, D) matrix with row stride `stride` into shared memory,
// 16 bytes per thread and step; rows >= T are zero-filled.
template <typename T, int D>
__device__ __forceinline__ void load_tile(T* dst, const T* src, int64_t stride, int row0, int n_rows) {
  constexpr int kChunks = D / 8;
  for (int idx = threadIdx.x; idx < kTile * kChunks; idx += kThreads) {
    const int r = idx / kChunks, c = (idx % kChunks) * 8;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (row0 + r < n_rows) val = *reinterpret_cast<const uint4*>(src + (row0 + r) * stride + c);
    *reinterpret_cast<uint4*>(dst + r * Pitch<D>::kIn + c) = val;
  }
}

template <typename T>
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major>;
template <typename T>
using FragAT = wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::col_major>;
template <typename T>
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major>;
template <typename T>
using FragBT = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// dst (16 x 64 fp32, pitch Pitch::kS) = A_w (16 x D rows of a tile, pitch kIn) times
// B^T (B a 64 x D tile, pitch kIn), for the 16-column blocks n < n_blocks.
template <typename T, int D>
__device__ __forceinline__ void rows_times_tile_t(float* dst, const T* a_rows, const T* b_tile, int n_blocks) {
  FragA<T> a[D / 16];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) wmma::load_matrix_sync(a[kk], a_rows + kk * 16, Pitch<D>::kIn);
  for (int n = 0; n < n_blocks; ++n) {
    FragC acc;
    wmma::fill_fragment(acc, 0.0f);
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      FragBT<T> b;  // B^T[d][j] = B[j][d]: column-major view of the row-major tile
      wmma::load_matrix_sync(b, b_tile + n * 16 * Pitch<D>::kIn + kk * 16, Pitch<D>::kIn);
      wmma::mma_sync(acc, a[kk], b, acc);
    }
    wmma::store_matrix_sync(dst + n * 16, acc, Pitch<D>::kS, wmma::mem_row_major);
  }
}

// ---------------------------------------------------------------------------------------------
// Forward

template <int D>
constexpr size_t forward_smem_bytes() {
  return 3 * kTile * Pitch<D>::kIn * 2 + kTile * Pitch<D>::kS * 4 + kTile * Pitch<D>::kP * 2 +
         kTile * Pitch<D>::kO * 4;
}

template <typename T, int D, bool kDropout>
__global__ void __launch_bounds__(kThreads) attention_forward_kernel(AttentionParams p) {
  extern __shared__ __align__(128) unsigned char smem[];
  T* Qs = reinterpret_cast<T*>(smem);
  T* Ks = Qs + kTile * Pitch<D>::kIn;
  T* Vs = Ks + kTile * Pitch<D>::kIn;
  float* Ss = reinterpret_cast<float*>(Vs + kTile * Pitch<D>::kIn);
  T* Ps = reinterpret_cast<T*>(Ss + kTile * Pitch<D>::kS);
  float* Os = reinterpret_cast<float*>(Ps + kTile * Pitch<D>::kP);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int q_tile = gridDim.x - 1 - blockIdx.x;  // longest (last) query tiles start first
  const int i0 = q_tile * kTile, h = blockIdx.y, b = blockIdx.z;
  const int T_ = p.T;
  const uint32_t bh = static_cast<uint32_t>(b * p.H + h);
  const T* q = static_cast<const T*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1];
  const T* k = static_cast<const T*>(p.k) + b * p.k_stride[0] + h * p.k_stride[1];
  const T* v = static_cast<const T*>(p.v) + b * p.v_stride[0] + h * p.v_stride[1];

  load_tile<T, D>(Qs, q, p.q_stride[2], i0, T_);
  // This lane's row of the warp's 16 and its side of the 64 columns (and of O's D columns).
  const int r = lane >> 1, side = lane & 1;
  const int row = warp * 16 + r, i = i0 + row;
  float* o_row = Os + row * Pitch<D>::kO;
#pragma unroll
  for (int c = side * (D / 2); c < (side + 1) * (D / 2); ++c) o_row[c] = 0.0f;
  float m = -INFINITY, l = 0.0f;  // running max (log2 units) and sum of this row
  const float scale_log2 = p.scale * kLog2e;

  for (int j0 = 0; j0 <= i0; j0 += kTile) {
    const bool diagonal = (j0 == i0);
    __syncthreads();  // everyone is done with the previous K, V tiles
    load_tile<T, D>(Ks, k, p.k_stride[2], j0, T_);
    load_tile<T, D>(Vs, v, p.v_stride[2], j0, T_);
    __syncthreads();

    // S_w = Q_w K^T; on the diagonal tile the blocks n > warp lie above the diagonal.
    const int n_blocks = diagonal ? warp + 1 : kTile / 16;
    rows_times_tile_t<T, D>(Ss + warp * 16 * Pitch<D>::kS, Qs + warp * 16 * Pitch<D>::kIn, Ks, n_blocks);
    __syncwarp();

    // Online softmax of row i over columns j0 + c, c in [32 side, 32 side + 32).
    const float* s_row = Ss + row * Pitch<D>::kS;
    T* p_row = Ps + row * Pitch<D>::kP;
    const int c_begin = side * 32;
    float mx = -INFINITY;
#pragma unroll
    for (int c = c_begin; c < c_begin + 32; ++c)
      if (j0 + c <= i) mx = fmaxf(mx, s_row[c] * scale_log2);
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float m_new = fmaxf(m, mx);  // finite: column j0 <= i is always valid
    const float alpha = exp2f(m - m_new);
    float sum = 0.0f;
#pragma unroll
    for (int c0 = c_begin; c0 < c_begin + 32; c0 += 8) {
      uint32_t keep = 0xFFu;
      if (kDropout)
        keep = dropout_keep8(p.seed, p.offset, bh, static_cast<uint32_t>(i),
                             static_cast<uint32_t>((j0 + c0) / 8), p.threshold);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const int c = c0 + e;
        const float pr = (j0 + c <= i) ? exp2f(s_row[c] * scale_log2 - m_new) : 0.0f;
        sum += pr;  // l sums the probabilities before dropout
        const float pz = kDropout ? (((keep >> e) & 1u) ? pr * p.keep_scale : 0.0f) : pr;
        p_row[c] = from_acc<T>(pz);
      }
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l = l * alpha + sum;
    m = m_new;
#pragma unroll
    for (int c = side * (D / 2); c < (side + 1) * (D / 2); ++c) o_row[c] *= alpha;
    __syncwarp();

    // O_w += (P o Z)_w V; on the diagonal tile P's blocks kk > warp are zero.
    const int k_blocks = diagonal ? warp + 1 : kTile / 16;
#pragma unroll
    for (int n = 0; n < D / 16; ++n) {
      FragC acc;
      float* o_tile = Os + warp * 16 * Pitch<D>::kO + n * 16;
      wmma::load_matrix_sync(acc, o_tile, Pitch<D>::kO, wmma::mem_row_major);
      for (int kk = 0; kk < k_blocks; ++kk) {
        FragA<T> a;
        FragB<T> bv;
        wmma::load_matrix_sync(a, Ps + warp * 16 * Pitch<D>::kP + kk * 16, Pitch<D>::kP);
        wmma::load_matrix_sync(bv, Vs + kk * 16 * Pitch<D>::kIn + n * 16, Pitch<D>::kIn);
        wmma::mma_sync(acc, a, bv, acc);
      }
      wmma::store_matrix_sync(o_tile, acc, Pitch<D>::kO, wmma::mem_row_major);
    }
    __syncwarp();
  }

  if (i < T_) {
    const float inv_l = 1.0f / l;  // l >= 1: the row maximum contributes exp(0)
    T* out = static_cast<T*>(p.out) + ((static_cast<int64_t>(bh) * T_ + i) * D);
#pragma unroll
    for (int c = side * (D / 2); c < (side + 1) * (D / 2); ++c) out[c] = from_acc<T>(o_row[c] * inv_l);
    if (side == 0) p.lse[static_cast<int64_t>(bh) * T_ + i] = (m + log2f(l)) * kLn2;
  }
}

// ---------------------------------------------------------------------------------------------
// Backward

// delta[bh, i] = sum_d dO[i, d] * O[i, d] in fp32: one warp per row.
template <typename T, int D>
__global__ void attention_backward_delta_kernel(AttentionParams p) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= static_cast<int64_t>(p.B) * p.H * p.T) return;
  const int64_t bh = row / p.T, i = row % p.T, b = bh / p.H, h = bh % p.H;
  const T* dO = static_cast<const T*>(p.dout) + b * p.do_stride[0] + h * p.do_stride[1] + i * p.do_stride[2];
  const T* O = static_cast<const T*>(p.out) + row * D;
  float s = 0.0f;
  for (int c = lane; c < D; c += 32) s += to_acc(dO[c]) * to_acc(O[c]);
#pragma unroll
  for (int w = 16; w > 0; w >>= 1) s += __shfl_xor_sync(0xffffffffu, s, w);
  if (lane == 0) p.delta[row] = s;
}

template <int D>
constexpr size_t backward_smem_bytes() {
  // K, V, Q, dO tiles; S and dP (fp32, reused as dQ/dK/dV staging); P o Z and dS; lse, delta
  return 4 * kTile * Pitch<D>::kIn * 2 + 2 * kTile * Pitch<D>::kS * 4 + 2 * kTile * Pitch<D>::kP * 2 +
         2 * kTile * 4;
}

// Stage a warp's 16 x D fp32 fragments in shared memory (pitch kO) for element-wise use.
template <int D>
__device__ __forceinline__ void stage_rows(float* stage, FragC (&frag)[D / 16]) {
#pragma unroll
  for (int n = 0; n < D / 16; ++n) wmma::store_matrix_sync(stage + n * 16, frag[n], Pitch<D>::kO, wmma::mem_row_major);
  __syncwarp();
}

template <typename T, int D, bool kDropout>
__global__ void __launch_bounds__(kThreads) attention_backward_kernel(AttentionParams p) {
  static_assert(2 * kTile * Pitch<D>::kS >= kTile * Pitch<D>::kO, "staging must fit in S and dP");
  extern __shared__ __align__(128) unsigned char smem[];
  T* Ks = reinterpret_cast<T*>(smem);
  T* Vs = Ks + kTile * Pitch<D>::kIn;
  T* Qs = Vs + kTile * Pitch<D>::kIn;
  T* dOs = Qs + kTile * Pitch<D>::kIn;
  float* Ss = reinterpret_cast<float*>(dOs + kTile * Pitch<D>::kIn);
  float* dPs = Ss + kTile * Pitch<D>::kS;
  T* PZs = reinterpret_cast<T*>(dPs + kTile * Pitch<D>::kS);
  T* dSs = PZs + kTile * Pitch<D>::kP;
  float* lse_s = reinterpret_cast<float*>(dSs + kTile * Pitch<D>::kP);
  float* delta_s = lse_s + kTile;
  float* stage = Ss + (threadIdx.x / 32) * 16 * Pitch<D>::kO;  // per-warp 16 x D fp32 staging

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int j0 = blockIdx.x * kTile, h = blockIdx.y, b = blockIdx.z;
  const int T_ = p.T;
  const int64_t bh = static_cast<int64_t>(b) * p.H + h;
  const T* q = static_cast<const T*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1];
  const T* k = static_cast<const T*>(p.k) + b * p.k_stride[0] + h * p.k_stride[1];
  const T* v = static_cast<const T*>(p.v) + b * p.v_stride[0] + h * p.v_stride[1];
  const T* dO = static_cast<const T*>(p.dout) + b * p.do_stride[0] + h * p.do_stride[1];
  const float* lse = p.lse + bh * T_;
  const float* delta = p.delta + bh * T_;
  float* dq_accum = p.dq_accum + bh * T_ * D;

  load_tile<T, D>(Ks, k, p.k_stride[2], j0, T_);
  load_tile<T, D>(Vs, v, p.v_stride[2], j0, T_);
  FragC dK[D / 16], dV[D / 16];  // key rows j0 + 16 warp .. + 15
#pragma unroll
  for (int n = 0; n < D / 16; ++n) {
    wmma::fill_fragment(dK[n], 0.0f);
    wmma::fill_fragment(dV[n], 0.0f);
  }
  const int r = lane >> 1, side = lane & 1, c_begin = side * 32;
  const int row = warp * 16 + r;  // this lane's row of the S / dP tile (a query row)
  const float scale_log2 = p.scale * kLog2e;

  for (int i0 = j0; i0 < T_; i0 += kTile) {
    const bool diagonal = (i0 == j0);
    __syncthreads();  // the previous query tile's Q, dO, P o Z, dS and staging are consumed
    load_tile<T, D>(Qs, q, p.q_stride[2], i0, T_);
    load_tile<T, D>(dOs, dO, p.do_stride[2], i0, T_);
    if (threadIdx.x < kTile) {
      const int ii = i0 + threadIdx.x;
      lse_s[threadIdx.x] = ii < T_ ? lse[ii] * kLog2e : 0.0f;  // log2 units
      delta_s[threadIdx.x] = ii < T_ ? delta[ii] : 0.0f;
    }
    __syncthreads();

    // S_w = Q_w K^T and dP_w = dO_w V^T for query rows 16 warp..; blocks n > warp of the
    // diagonal tile are above the diagonal.
    const int n_blocks = diagonal ? warp + 1 : kTile / 16;
    rows_times_tile_t<T, D>(Ss + warp * 16 * Pitch<D>::kS, Qs + warp * 16 * Pitch<D>::kIn, Ks, n_blocks);
    rows_times_tile_t<T, D>(dPs + warp * 16 * Pitch<D>::kS, dOs + warp * 16 * Pitch<D>::kIn, Vs, n_blocks);
    __syncwarp();

    {  // P = exp(scale S - lse), P o Z, dS = P o (dP o Z - delta) for row i, 32 columns
      const int i = i0 + row;
      const float lse2 = lse_s[row], di = delta_s[row];
      const float* s_row = Ss + row * Pitch<D>::kS;
      const float* dp_row = dPs + row * Pitch<D>::kS;
      T* pz_row = PZs + row * Pitch<D>::kP;
      T* ds_row = dSs + row * Pitch<D>::kP;
#pragma unroll
      for (int c0 = c_begin; c0 < c_begin + 32; c0 += 8) {
        uint32_t keep = 0xFFu;
        if (kDropout && i < T_)
          keep = dropout_keep8(p.seed, p.offset, static_cast<uint32_t>(bh), static_cast<uint32_t>(i),
                               static_cast<uint32_t>((j0 + c0) / 8), p.threshold);
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          const int c = c0 + e;
          const bool valid = (j0 + c <= i) && (i < T_);
          const float pr = valid ? exp2f(s_row[c] * scale_log2 - lse2) : 0.0f;
          const float z = kDropout ? (((keep >> e) & 1u) ? p.keep_scale : 0.0f) : 1.0f;
          const float dp = valid ? dp_row[c] : 0.0f;
          pz_row[c] = from_acc<T>(pr * z);
          ds_row[c] = from_acc<T>(pr * (dp * z - di));
        }
      }
    }
    __syncthreads();  // dV, dK need every query row of P o Z and dS

    // dV_w += (P o Z)^T dO and dK_w += dS^T Q over the query blocks kk; on the diagonal tile
    // query blocks kk < warp lie wholly above key block warp (all masked).
    const int kk_begin = diagonal ? warp : 0;
#pragma unroll
    for (int n = 0; n < D / 16; ++n) {
      for (int kk = kk_begin; kk < kTile / 16; ++kk) {
        FragAT<T> a;  // A[j][i] = P o Z [i][j]: column-major view of the row-major tile
        FragB<T> bm;
        wmma::load_matrix_sync(a, PZs + kk * 16 * Pitch<D>::kP + warp * 16, Pitch<D>::kP);
        wmma::load_matrix_sync(bm, dOs + kk * 16 * Pitch<D>::kIn + n * 16, Pitch<D>::kIn);
        wmma::mma_sync(dV[n], a, bm, dV[n]);
        wmma::load_matrix_sync(a, dSs + kk * 16 * Pitch<D>::kP + warp * 16, Pitch<D>::kP);
        wmma::load_matrix_sync(bm, Qs + kk * 16 * Pitch<D>::kIn + n * 16, Pitch<D>::kIn);
        wmma::mma_sync(dK[n], a, bm, dK[n]);
      }
    }

    // dQ_w = dS_w K (query rows 16 warp..), accumulated over key tiles with atomics.
    {  // staged block by block (one fragment live): S and dP are no longer read (barrier above)
      const int k_blocks = diagonal ? warp + 1 : kTile / 16;
#pragma unroll
      for (int n = 0; n < D / 16; ++n) {
        FragC dQ;
        wmma::fill_fragment(dQ, 0.0f);
        for (int kk = 0; kk < k_blocks; ++kk) {
          FragA<T> a;
          FragB<T> bm;
          wmma::load_matrix_sync(a, dSs + warp * 16 * Pitch<D>::kP + kk * 16, Pitch<D>::kP);
          wmma::load_matrix_sync(bm, Ks + kk * 16 * Pitch<D>::kIn + n * 16, Pitch<D>::kIn);
          wmma::mma_sync(dQ, a, bm, dQ);
        }
        wmma::store_matrix_sync(stage + n * 16, dQ, Pitch<D>::kO, wmma::mem_row_major);
      }
      __syncwarp();
      for (int idx = lane; idx < 16 * D; idx += 32) {
        const int rr = idx / D, c = idx % D, i = i0 + warp * 16 + rr;
        if (i < T_) atomicAdd(dq_accum + static_cast<int64_t>(i) * D + c, stage[rr * Pitch<D>::kO + c]);
      }
    }
  }

  // dk = scale dK, dv = dV for key rows j0 + 16 warp + rr < T.
  __syncwarp();
  T* dk = static_cast<T*>(p.dk) + bh * T_ * D;
  T* dv = static_cast<T*>(p.dv) + bh * T_ * D;
  stage_rows<D>(stage, dK);
  for (int idx = lane; idx < 16 * D; idx += 32) {
    const int rr = idx / D, c = idx % D, j = j0 + warp * 16 + rr;
    if (j < T_) dk[static_cast<int64_t>(j) * D + c] = from_acc<T>(stage[rr * Pitch<D>::kO + c] * p.scale);
  }
  __syncwarp();
  stage_rows<D>(stage, dV);
  for (int idx = lane; idx < 16 * D; idx += 32) {
    const int rr = idx / D, c = idx % D, j = j0 + warp * 16 + rr;
    if (j < T_) dv[static_cast<int64_t>(j) * D + c] = from_acc<T>(stage[rr * Pitch<D>::kO + c]);
  }
}

// dq = scale * dq_accum in the input dtype.
template <typename T>
__global__ void attention_backward_dq_kernel(const float* dq_accum, T* dq, float scale, int64_t n) {
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dq[idx] = from_acc<T>(dq_accum[idx] * scale);
}

// ---------------------------------------------------------------------------------------------
// Launchers

template <typename T, int D>
cudaError_t forward_d(const AttentionParams& p, cudaStream_t stream) {
  const dim3 grid((p.T + kTile - 1) / kTile, p.H, p.B);
  constexpr size_t smem = forward_smem_bytes<D>();
  auto kernel = p.dropout ? attention_forward_kernel<T, D, true> : attention_forward_kernel<T, D, false>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (err != cudaSuccess) return err;
  kernel<<<grid, kThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

template <typename T, int D>
cudaError_t backward_d(const AttentionParams& p, cudaStream_t stream) {
  const int64_t rows = static_cast<int64_t>(p.B) * p.H * p.T;
  attention_backward_delta_kernel<T, D><<<static_cast<unsigned>((rows + 7) / 8), 256, 0, stream>>>(p);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const dim3 grid((p.T + kTile - 1) / kTile, p.H, p.B);
  constexpr size_t smem = backward_smem_bytes<D>();
  auto kernel = p.dropout ? attention_backward_kernel<T, D, true> : attention_backward_kernel<T, D, false>;
  err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (err != cudaSuccess) return err;
  kernel<<<grid, kThreads, smem, stream>>>(p);
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const int64_t n = rows * D;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 65535));
  attention_backward_dq_kernel<T><<<blocks, 256, 0, stream>>>(p.dq_accum, static_cast<T*>(p.dq), p.scale, n);
  return cudaGetLastError();
}

template <typename T>
cudaError_t forward_t(const AttentionParams& p, cudaStream_t stream) {
  switch (p.D) {
    case 32: return forward_d<T, 32>(p, stream);
    case 64: return forward_d<T, 64>(p, stream);
    case 128: return forward_d<T, 128>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

template <typename T>
cudaError_t backward_t(const AttentionParams& p, cudaStream_t stream) {
  switch (p.D) {
    case 32: return backward_d<T, 32>(p, stream);
    case 64: return backward_d<T, 64>(p, stream);
    case 128: return backward_d<T, 128>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

cudaError_t causal_attention_forward_cuda(const AttentionParams& p, bool bf16, cudaStream_t stream) {
  return bf16 ? forward_t<__nv_bfloat16>(p, stream) : forward_t<__half>(p, stream);
}

cudaError_t causal_attention_backward_cuda(const AttentionParams& p, bool bf16, cudaStream_t stream) {
  return bf16 ? backward_t<__nv_bfloat16>(p, stream) : backward_t<__half>(p, stream);
}

size_t causal_attention_smem_bytes(int D, bool backward) {
  switch (D) {
    case 32: return backward ? backward_smem_bytes<32>() : forward_smem_bytes<32>();
    case 64: return backward ? backward_smem_bytes<64>() : forward_smem_bytes<64>();
    case 128: return backward ? backward_smem_bytes<128>() : forward_smem_bytes<128>();
    default: return 0;
  }
}

}  // namespace gpt_kernels
