// Fused causal attention with in-kernel dropout: the CPU kernel (fp32, fp64) and the composite
// ops of both backends. The CUDA twin is csrc/cuda/causal_attention.cu (same formulas, same mask).
//
// Algorithm (FlashAttention-2, Dao 2023), per head, scale s = 1/sqrt(D) by default:
//   forward   per tile of BR = 64 query rows i, stream the key/value tiles of columns j <= i:
//               S = s Q_i K_j^T;  m' = max(m, rowmax S);  P = exp(S - m')
//               l = l exp(m - m') + rowsum P;  O = O exp(m - m') + (P o Z) V_j
//             then O /= l, lse = m + log l (fp32; fp64 for fp64). Z = dropout mask / (1 - p).
//   backward  delta_i = rowsum(dO_i o O_i); per key tile j, for the query rows i >= j:
//               P = exp(s Q_i K_j^T - lse_i) (recomputed),  dV_j += (P o Z)^T dO_i
//               dS = P o ((dO_i V_j^T) o Z - delta_i),  dK_j += s dS^T Q_i,  dQ_i += s dS K_j
//   Z is regenerated from (seed, offset, b, h, i, j) (philox_dropout.h), never stored; column 0
//   is valid in every causal row, so no row is ever fully masked (no -inf/NaN handling).
// FLOPs: forward 2*B*H*T*T*D, backward 2.5x. Memory traffic: forward reads q once, k and v once
// per query tile (from cache at these sizes), writes out + lse; backward reads k, v once, q and
// dout once per key tile, out once, writes dq, dk, dv. The (T, T) matrices never exist.
//
// CPU mapping, and why: the tile products go through the BLAS sgemm torch links (MKL on x86) on
// raw pointers with the tensors' row strides, so strided q, k, v are read in place. The forward
// streams key tiles of up to 256 columns (fewer, larger gemms run closer to sgemm's peak; the
// causal waste stays within one 64 x 64 diagonal block); the backward runs each key tile of 64
// columns against its whole strip of query rows (one gemm per product per key tile). Softmax,
// mask and dropout are a plain loop with a polynomial exp that gcc vectorises; Philox runs 8
// calls side by side in AVX2 lanes (philox_cpu.h). p = 0 is its own template instance.
// Parallel over (b, h, query tile) forward and (b, h) backward: a head's dq is accumulated by
// the thread that owns the head, no atomics. causal_attention_qkv runs the same kernels on
// (B, H, T, D) views of qkv (B, T, 3C), out (B, T, C) and grad_qkv: every output is indexed by
// its own row strides (RowStrides), so no layout needs a copy.
// History of the versions and their timings: bench/results/NOTES.md.
//
// Check: python -m pytest tests/test_causal_attention.py
// Bench: python bench/causal_attention_bench.py [--device cpu|cuda] [--quick]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <type_traits>
#include <vector>

#include "causal_attention.h"
#include "common.h"
#include "philox_cpu.h"
#include "philox_dropout.h"

namespace gpt_kernels {
namespace {

constexpr int64_t BR = 64;  // query rows per tile
constexpr int64_t BC = 64;  // key columns per tile (BR == BC: only diagonal tiles are masked)
// The CPU forward streams wider key tiles (the online softmax is the same): 4x fewer, larger
// gemms run sgemm closer to its peak; a tile is clipped at the tile's last row, so the causal
// waste stays within one 64 x 64 diagonal block.
constexpr int64_t kFwdBC = 256;

// Column-major gemm C = alpha op(A) op(B) + beta C through the Fortran BLAS that torch's CPU
// library exports (MKL's sgemm_/dgemm_ on x86 wheels; the LP64 interface, 32-bit ints).
// at::native::cpublas::gemm would be the natural call but its symbols are not exported.
// The symbols are weak so the module still loads with a torch that lacks them; then the tiles
// go through at::addmm on from_blob views (correct, a few microseconds slower per call).
extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
            const float* beta, float* c, const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const double* alpha, const double* a, const int* lda, const double* b, const int* ldb,
            const double* beta, double* c, const int* ldc) __attribute__((weak));
}

template <typename T>
void gemm_fallback(char ta, char tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
                   int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  const auto opt = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  // op(A) is m x k, op(B) k x n, C m x n, all column-major: element (r, s) at r + s * ld.
  auto A = ta == 'N' ? at::from_blob(const_cast<T*>(a), {m, k}, {1, lda}, opt)
                     : at::from_blob(const_cast<T*>(a), {m, k}, {lda, 1}, opt);
  auto B = tb == 'N' ? at::from_blob(const_cast<T*>(b), {k, n}, {1, ldb}, opt)
                     : at::from_blob(const_cast<T*>(b), {k, n}, {ldb, 1}, opt);
  auto C = at::from_blob(c, {m, n}, {1, ldc}, opt);
  C.addmm_(A, B, beta, alpha);
}

// GPT_KERNELS_NO_BLAS=1 forces the fallback (for its test).
inline bool blas_disabled() {
  static const bool disabled = std::getenv("GPT_KERNELS_NO_BLAS") != nullptr;
  return disabled;
}

template <typename T>
inline void gemm_cm(char ta, char tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
                    int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (blas_disabled()) return gemm_fallback(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  const int mi = static_cast<int>(m), ni = static_cast<int>(n), ki = static_cast<int>(k);
  const int ldai = static_cast<int>(lda), ldbi = static_cast<int>(ldb), ldci = static_cast<int>(ldc);
  if constexpr (std::is_same_v<T, float>) {
    if (sgemm_) return sgemm_(&ta, &tb, &mi, &ni, &ki, &alpha, a, &ldai, b, &ldbi, &beta, c, &ldci);
  } else {
    if (dgemm_) return dgemm_(&ta, &tb, &mi, &ni, &ki, &alpha, a, &ldai, b, &ldbi, &beta, c, &ldci);
  }
  gemm_fallback(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// Row-major wrappers around the column-major gemm (a row-major matrix is the transpose of a
// column-major one, so C = A B is computed as C^T = B^T A^T).
// C[M,N] = alpha * A[M,K] B[N,K]^T + beta * C
template <typename T>
inline void mm_nt(int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
                  int64_t ldb, T beta, T* C, int64_t ldc) {
  gemm_cm<T>('T', 'N', N, M, K, alpha, B, ldb, A, lda, beta, C, ldc);
}
// C[M,N] = alpha * A[M,K] B[K,N] + beta * C
template <typename T>
inline void mm_nn(int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
                  int64_t ldb, T beta, T* C, int64_t ldc) {
  gemm_cm<T>('N', 'N', N, M, K, alpha, B, ldb, A, lda, beta, C, ldc);
}
// C[M,N] = alpha * A[K,M]^T B[K,N] + beta * C
template <typename T>
inline void mm_tn(int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
                  int64_t ldb, T beta, T* C, int64_t ldc) {
  gemm_cm<T>('N', 'T', N, M, K, alpha, B, ldb, A, lda, beta, C, ldc);
}

// x[c] = exp(x[c] - sub) for c < n. Float: Cody-Waite range reduction and a degree-6 Taylor
// polynomial (relative error < 2e-7), written so gcc vectorises it (no float compare, no
// float->int conversion: both trap, so gcc keeps them scalar). Arguments here are finite and
// <= 0; below about -87 the result is 0.
inline void exp_sub(float* x, int64_t n, float sub) {
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) {
    const float v = x[c] - sub;
    // Round v*log2(e) to the nearest integer n by adding 1.5 * 2^23: the sum's low mantissa
    // bits then hold n (no float->int conversion, which gcc will not vectorise when it traps).
    const float shifted = v * 1.44269504088896341f + 12582912.0f;
    int32_t n_int = __builtin_bit_cast(int32_t, shifted) - 0x4B400000;
    n_int = n_int < -127 ? -127 : n_int;  // 2^-127 is encoded as +0: exp underflows to 0
    const float t = shifted - 12582912.0f;
    const float f = (v - t * 0.693145751953125f) - t * 1.42860682030941723212e-6f;
    float p = 1.0f / 720;
    p = p * f + 1.0f / 120;
    p = p * f + 1.0f / 24;
    p = p * f + 1.0f / 6;
    p = p * f + 0.5f;
    p = p * f + 1.0f;
    p = p * f + 1.0f;
    const float two_t = __builtin_bit_cast(float, (n_int + 127) << 23);
    x[c] = p * two_t;
  }
}
inline void exp_sub(double* x, int64_t n, double sub) {
  for (int64_t c = 0; c < n; ++c) x[c] = std::exp(x[c] - sub);
}

// The dropout factors Z of row i, columns j0 .. j0 + 63 (j0 a multiple of 8): keep_scale where
// kept, 0 where dropped, the mask of dropout_keep8 (philox_dropout.h). z has room for BC = 64.
static_assert(BC == 64, "one keep_factors64 call per key tile row");
template <typename T>
inline void dropout_factors(T* z, T keep_scale, uint64_t seed, uint64_t offset, uint32_t bh,
                            int64_t i, int64_t j0, uint32_t threshold) {
  keep_factors64(z, keep_scale, static_cast<uint32_t>(j0 / 8), static_cast<uint32_t>(i), bh,
                 static_cast<uint32_t>(offset), seed, threshold);
}

struct Dims {
  int64_t B, H, T, D;
  int64_t qb, qh, qt, kb, kh, kt, vb, vh, vt;  // strides (elements) of q, k, v; d stride is 1
};

// Element strides of a (B, H, T, D) output whose D elements are adjacent: contiguous for
// causal_attention, a (B, T, H, D) layout for causal_attention_qkv (no transposing copies).
struct RowStrides {
  int64_t b, h, t;
};

RowStrides row_strides(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2)}; }

Dims dims_of(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  return {q.size(0), q.size(1), q.size(2), q.size(3),
          q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
          v.stride(0), v.stride(1), v.stride(2)};
}

template <typename T, bool kDropout>
void forward_cpu(const T* q, const T* k, const T* v, T* out, RowStrides os, T* lse, const Dims& d,
                 T scale, double p, uint64_t seed, uint64_t offset) {
  const int64_t n_qtiles = (d.T + BR - 1) / BR;
  const uint32_t threshold = dropout_threshold(static_cast<float>(p));
  const T keep_scale = static_cast<T>(1.0 / (1.0 - p));
  at::parallel_for(0, d.B * d.H * n_qtiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> S_buf(BR * kFwdBC);
    T* S = S_buf.data();
    alignas(64) T O[BR * 128];
    T m[BR], l[BR];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t bh = item / n_qtiles, b = bh / d.H, h = bh % d.H;
      const int64_t i0 = (item % n_qtiles) * BR, nr = std::min(BR, d.T - i0);
      const T* Q = q + b * d.qb + h * d.qh + i0 * d.qt;
      const T* K = k + b * d.kb + h * d.kh;
      const T* V = v + b * d.vb + h * d.vh;
      std::fill(O, O + nr * d.D, T(0));
      std::fill(m, m + nr, -std::numeric_limits<T>::infinity());
      std::fill(l, l + nr, T(0));
      for (int64_t j0 = 0; j0 < i0 + nr; j0 += kFwdBC) {  // key tiles with some j <= i
        const int64_t nc = std::min(kFwdBC, i0 + nr - j0);  // no column beyond the last row's i
        mm_nt<T>(nr, nc, d.D, scale, Q, d.qt, K + j0 * d.kt, d.kt, T(0), S, kFwdBC);
        for (int64_t r = 0; r < nr; ++r) {
          const int64_t i = i0 + r;
          T* row = S + r * kFwdBC;
          const int64_t n_valid = std::min(nc, i - j0 + 1);  // causal: columns j <= i
          T mx = row[0];
#pragma omp simd reduction(max : mx)
          for (int64_t c = 1; c < n_valid; ++c) mx = std::max(mx, row[c]);
          const T m_new = std::max(m[r], mx);
          const T alpha = std::exp(m[r] - m_new);  // 0 on the first tile (m = -inf)
          exp_sub(row, n_valid, m_new);
          std::fill(row + n_valid, row + nc, T(0));
          T sum = 0;
#pragma omp simd reduction(+ : sum)
          for (int64_t c = 0; c < n_valid; ++c) sum += row[c];
          l[r] = l[r] * alpha + sum;  // l sums the probabilities before dropout
          m[r] = m_new;
          if (alpha != T(1)) {
            T* o = O + r * d.D;
#pragma omp simd
            for (int64_t c = 0; c < d.D; ++c) o[c] *= alpha;
          }
          if constexpr (kDropout) {
            alignas(64) T z[BC];
            for (int64_t c0 = 0; c0 < n_valid; c0 += BC) {  // 64 columns per 8 Philox calls
              const int64_t n = std::min(BC, n_valid - c0);
              dropout_factors(z, keep_scale, seed, offset, static_cast<uint32_t>(bh), i, j0 + c0,
                              threshold);
#pragma omp simd
              for (int64_t c = 0; c < n; ++c) row[c0 + c] *= z[c];
            }
          }
        }
        mm_nn<T>(nr, d.D, nc, T(1), S, kFwdBC, V + j0 * d.vt, d.vt, T(1), O, d.D);
      }
      T* out_tile = out + b * os.b + h * os.h + i0 * os.t;
      T* lse_tile = lse + bh * d.T + i0;
      for (int64_t r = 0; r < nr; ++r) {
        const T inv_l = T(1) / l[r];  // l >= 1: the row maximum contributes exp(0)
        for (int64_t c = 0; c < d.D; ++c) out_tile[r * os.t + c] = O[r * d.D + c] * inv_l;
        lse_tile[r] = m[r] + std::log(l[r]);
      }
    }
  });
}

// grad_out, out, dq, dk, dv (B,H,T,D) with d stride 1 and the row strides given.
// Key tiles of BC columns; the query rows of a key tile are taken as one strip i = j0 .. T-1
// (FlashAttention-2's backward with BR = T - j0: the same formulas, but each of the 5 products
// is one gemm over the strip, which runs sgemm at a better rate than many 64 x 64 x 64 ones).
template <typename T, bool kDropout>
void backward_cpu(const T* dout, RowStrides gs, const T* q, const T* k, const T* v, const T* out,
                  RowStrides os, const T* lse, T* dq, RowStrides dqs, T* dk, RowStrides dks, T* dv,
                  RowStrides dvs, const Dims& d, T scale, double p, uint64_t seed, uint64_t offset) {
  const int64_t ot = gs.t;
  const uint32_t threshold = dropout_threshold(static_cast<float>(p));
  const T keep_scale = static_cast<T>(1.0 / (1.0 - p));
  at::parallel_for(0, d.B * d.H, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> P_buf(d.T * BC), dP_buf(d.T * BC), delta(d.T);
    T* P = P_buf.data();
    T* dP = dP_buf.data();
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / d.H, h = bh % d.H;
      const T* Q = q + b * d.qb + h * d.qh;
      const T* K = k + b * d.kb + h * d.kh;
      const T* V = v + b * d.vb + h * d.vh;
      const T* dO = dout + b * gs.b + h * gs.h;
      const T* O = out + b * os.b + h * os.h;
      const T* L = lse + bh * d.T;
      T* dQ = dq + b * dqs.b + h * dqs.h;
      T* dK = dk + b * dks.b + h * dks.h;
      T* dV = dv + b * dvs.b + h * dvs.h;
      for (int64_t i = 0; i < d.T; ++i) {  // delta_i = rowsum(dO o O) = sum_j P_ij dP_ij
        T s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t c = 0; c < d.D; ++c) s += dO[i * ot + c] * O[i * os.t + c];
        delta[i] = s;
      }
      for (int64_t j0 = 0; j0 < d.T; j0 += BC) {
        const int64_t nc = std::min(BC, d.T - j0);
        const int64_t nr = d.T - j0;  // query rows i >= j0
        const T* Qs = Q + j0 * d.qt;
        const T* dOs = dO + j0 * ot;
        mm_nt<T>(nr, nc, d.D, scale, Qs, d.qt, K + j0 * d.kt, d.kt, T(0), P, BC);
        mm_nt<T>(nr, nc, d.D, T(1), dOs, ot, V + j0 * d.vt, d.vt, T(0), dP, BC);
        for (int64_t r = 0; r < nr; ++r) {
          const int64_t i = j0 + r;
          T* prow = P + r * BC;
          T* dprow = dP + r * BC;
          const int64_t n_valid = std::min(nc, r + 1);  // causal: columns j <= i
          exp_sub(prow, n_valid, L[i]);
          const T di = delta[i];
          if constexpr (kDropout) {
            alignas(64) T z[BC];
            dropout_factors(z, keep_scale, seed, offset, static_cast<uint32_t>(bh), i, j0, threshold);
#pragma omp simd
            for (int64_t c = 0; c < n_valid; ++c) {
              const T pe = prow[c];
              dprow[c] = pe * (dprow[c] * z[c] - di);  // dS
              prow[c] = pe * z[c];                     // P o Z
            }
          } else {
#pragma omp simd
            for (int64_t c = 0; c < n_valid; ++c) dprow[c] = prow[c] * (dprow[c] - di);
          }
          std::fill(prow + n_valid, prow + nc, T(0));
          std::fill(dprow + n_valid, dprow + nc, T(0));
        }
        // P now holds P o Z, dP holds dS; each key row of dk, dv is written once (beta = 0).
        mm_tn<T>(nc, d.D, nr, T(1), P, BC, dOs, ot, T(0), dV + j0 * dvs.t, dvs.t);
        mm_tn<T>(nc, d.D, nr, scale, dP, BC, Qs, d.qt, T(0), dK + j0 * dks.t, dks.t);
        // dq accumulates over key tiles; the first (j0 = 0) covers every query row, so it
        // writes (beta = 0) and dq needs no zeroing beforehand
        mm_nn<T>(nr, d.D, nc, scale, dP, BC, K + j0 * d.kt, d.kt, j0 == 0 ? T(0) : T(1),
                 dQ + j0 * dqs.t, dqs.t);
      }
    }
  });
}

void check_cpu_dtype(const at::Tensor& q) {
  TORCH_CHECK(q.scalar_type() == at::kFloat || q.scalar_type() == at::kDouble,
              "causal_attention: on the CPU q, k, v must be float32 or float64, got ",
              q.scalar_type());
}

// Runs the forward into out, a (B,H,T,D) tensor with adjacent D elements (any row strides);
// returns (lse, rng_state).
std::tuple<at::Tensor, at::Tensor> run_forward(const at::Tensor& q, const at::Tensor& k,
                                               const at::Tensor& v, const at::Tensor& out,
                                               double dropout_p, double scale,
                                               std::optional<int64_t> seed_arg) {
  const Dims d = dims_of(q, k, v);
  auto lse = at::empty({d.B, d.H, d.T}, q.options());  // fp32, or fp64 for fp64 inputs
  const auto [seed, offset, rng_state] = dropout_seed(dropout_p, seed_arg, cpu_philox_seed);
  if (d.T == 0 || d.B * d.H == 0) return {lse, rng_state};
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "causal_attention_forward_cpu", [&] {
    const auto run = dropout_p > 0 ? forward_cpu<scalar_t, true> : forward_cpu<scalar_t, false>;
    run(q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
        out.data_ptr<scalar_t>(), row_strides(out), lse.data_ptr<scalar_t>(), d,
        static_cast<scalar_t>(scale), dropout_p, seed, offset);
  });
  return {lse, rng_state};
}

// Runs the backward into dq, dk, dv: (B,H,T,D) with adjacent D elements (contents ignored).
void run_backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                  const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                  const at::Tensor& rng_state, const at::Tensor& dq, const at::Tensor& dk,
                  const at::Tensor& dv, double dropout_p, double scale) {
  const Dims d = dims_of(q, k, v);
  if (d.T == 0 || d.B * d.H == 0) return;
  const auto [seed, offset] = read_rng_state(rng_state, "causal_attention");
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "causal_attention_backward_cpu", [&] {
    const auto run = dropout_p > 0 ? backward_cpu<scalar_t, true> : backward_cpu<scalar_t, false>;
    run(dout.data_ptr<scalar_t>(), row_strides(dout), q.data_ptr<scalar_t>(),
        k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
        row_strides(out), lse.data_ptr<scalar_t>(), dq.data_ptr<scalar_t>(), row_strides(dq),
        dk.data_ptr<scalar_t>(), row_strides(dk), dv.data_ptr<scalar_t>(), row_strides(dv), d,
        static_cast<scalar_t>(scale), dropout_p, seed, offset);
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> causal_attention_forward_cpu(
    const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in, double dropout_p,
    double scale, std::optional<int64_t> seed_arg) {
  check_attention_inputs(q_in, k_in, v_in, dropout_p, "causal_attention_forward");
  check_cpu_dtype(q_in);
  const at::Tensor q = last_dim_contiguous(q_in), k = last_dim_contiguous(k_in),
                   v = last_dim_contiguous(v_in);
  auto out = at::empty(q.sizes(), q.options());
  auto [lse, rng_state] = run_forward(q, k, v, out, dropout_p, scale, seed_arg);
  return {out, lse, rng_state};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> causal_attention_backward_cpu(
    const at::Tensor& dout_in, const at::Tensor& q_in, const at::Tensor& k_in,
    const at::Tensor& v_in, const at::Tensor& out_in, const at::Tensor& lse_in,
    const at::Tensor& rng_state, double dropout_p, double scale) {
  check_backward_inputs(dout_in, q_in, k_in, v_in, out_in, lse_in, rng_state, dropout_p);
  check_cpu_dtype(q_in);
  const at::Tensor q = last_dim_contiguous(q_in), k = last_dim_contiguous(k_in),
                   v = last_dim_contiguous(v_in), dout = last_dim_contiguous(dout_in),
                   out = last_dim_contiguous(out_in), lse = lse_in.contiguous();
  auto dq = at::empty(q.sizes(), q.options());
  auto dk = at::empty(q.sizes(), q.options());
  auto dv = at::empty(q.sizes(), q.options());
  run_backward(dout, q, k, v, out, lse, rng_state, dq, dk, dv, dropout_p, scale);
  return {dq, dk, dv};
}

// causal_attention_qkv on the CPU: q, k, v read in place from qkv (B, T, 3C), out written as
// (B, T, C) and the gradient as (B, T, 3C) through (B, H, T, D) views: no transposing copies,
// no concatenation of dq, dk, dv.
std::tuple<at::Tensor, at::Tensor, at::Tensor> causal_attention_qkv_forward_cpu(
    const at::Tensor& qkv_in, int64_t n_head, double dropout_p, double scale,
    std::optional<int64_t> seed_arg) {
  check_qkv_inputs(qkv_in, n_head, dropout_p, "causal_attention_qkv_forward");
  check_cpu_dtype(qkv_in);
  const at::Tensor qkv = qkv_in.contiguous();
  const auto [q, k, v] = qkv_heads(qkv, n_head);
  auto out = at::empty({qkv.size(0), qkv.size(1), qkv.size(2) / 3}, qkv.options());
  auto [lse, rng_state] = run_forward(q, k, v, heads_view(out, n_head), dropout_p, scale, seed_arg);
  return {out, lse, rng_state};
}

at::Tensor causal_attention_qkv_backward_cpu(const at::Tensor& dout_in, const at::Tensor& qkv_in,
                                             const at::Tensor& out_in, const at::Tensor& lse_in,
                                             const at::Tensor& rng_state, int64_t n_head,
                                             double dropout_p, double scale) {
  check_qkv_backward_inputs(dout_in, qkv_in, out_in, lse_in, rng_state, n_head, dropout_p);
  check_cpu_dtype(qkv_in);
  const at::Tensor qkv = qkv_in.contiguous(), dout = dout_in.contiguous(),
                   out = out_in.contiguous(), lse = lse_in.contiguous();
  const auto [q, k, v] = qkv_heads(qkv, n_head);
  auto grad_qkv = at::empty(qkv.sizes(), qkv.options());
  const auto [dq, dk, dv] = qkv_heads(grad_qkv, n_head);
  run_backward(heads_view(dout, n_head), q, k, v, heads_view(out, n_head), lse, rng_state, dq, dk,
               dv, dropout_p, scale);
  return grad_qkv;
}

// The public op: checks, default scale, and the forward (whose autograd formula is registered
// in gpt_kernels/causal_attention.py). Composite, so it runs for every backend.
at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            double dropout_p, std::optional<double> scale) {
  check_attention_inputs(q, k, v, dropout_p, "causal_attention");
  const double s = scale.has_value() ? *scale : 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  static const auto op = typed_op<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double,
      std::optional<int64_t>)>("gpt_kernels::causal_attention_forward");
  return std::get<0>(op.call(q, k, v, dropout_p, s, std::nullopt));
}

at::Tensor causal_attention_qkv(const at::Tensor& qkv, int64_t n_head, double dropout_p,
                                std::optional<double> scale) {
  check_qkv_inputs(qkv, n_head, dropout_p, "causal_attention_qkv");
  const double head_dim = static_cast<double>(qkv.size(2) / (3 * n_head));
  const double s = scale.has_value() ? *scale : 1.0 / std::sqrt(head_dim);
  static const auto op = typed_op<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
      const at::Tensor&, int64_t, double, double, std::optional<int64_t>)>(
      "gpt_kernels::causal_attention_qkv_forward");
  return std::get<0>(op.call(qkv, n_head, dropout_p, s, std::nullopt));
}

// (B, H, T, T) bool: the keep-mask the kernels apply for rng_state (rows i, columns j; only
// j <= i is meaningful). For tests and for reading the algorithm.
at::Tensor causal_attention_dropout_mask(int64_t B, int64_t H, int64_t T, double dropout_p,
                                         const at::Tensor& rng_state) {
  check_probability("causal_attention_dropout_mask", "dropout_p", dropout_p);
  const auto [seed, offset] = read_rng_state(rng_state, "causal_attention");
  auto mask = at::empty({B, H, T, T}, at::TensorOptions().dtype(at::kBool));
  bool* m = mask.data_ptr<bool>();
  const uint32_t threshold = dropout_threshold(static_cast<float>(dropout_p));
  at::parallel_for(0, B * H * T, 64, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t bh = row / T, i = row % T;
      for (int64_t j0 = 0; j0 < T; j0 += 8) {
        const uint32_t bits = dropout_keep8(seed, offset, static_cast<uint32_t>(bh),
                                            static_cast<uint32_t>(i), static_cast<uint32_t>(j0 / 8),
                                            threshold);
        for (int64_t e = 0; e < 8 && j0 + e < T; ++e) m[row * T + j0 + e] = (bits >> e) & 1u;
      }
    }
  });
  return mask;
}

}  // namespace

TORCH_LIBRARY_IMPL(gpt_kernels, CompositeImplicitAutograd, m) {
  m.impl("causal_attention", &causal_attention);
  m.impl("causal_attention_qkv", &causal_attention_qkv);
}

TORCH_LIBRARY_IMPL(gpt_kernels, CPU, m) {
  m.impl("causal_attention_forward", &causal_attention_forward_cpu);
  m.impl("causal_attention_backward", &causal_attention_backward_cpu);
  m.impl("causal_attention_dropout_mask", &causal_attention_dropout_mask);
  m.impl("causal_attention_qkv_forward", &causal_attention_qkv_forward_cpu);
  m.impl("causal_attention_qkv_backward", &causal_attention_qkv_backward_cpu);
}

}  // namespace gpt_kernels

