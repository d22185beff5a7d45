// Fused bias + GELU: out = gelu(x + bias), the exact (erf) GELU of nn.GELU() or, with
// approximate="tanh", its tanh approximation (nn.GELU(approximate="tanh"), GPT-2's), for the
// first MLP layer computed as a bias-free matmul x = inp @ W^T (M, N) followed by this op. CPU
// kernel; the CUDA twin is csrc/cuda/bias_gelu.cu (same formulas, same row blocking).
//
// Algorithm (gelu_math.h has the formulas):
//   forward   out[r, c] = gelu(u),  u = x[r, c] + bias[c]
//   backward  grad_x[r, c] = grad_out[r, c] * gelu'(u)     (u recomputed from x and bias)
//             grad_bias[c] = sum_r grad_x[r, c]: each block of 32 rows (kBiasGeluRowBlock) sums
//             into its own fp32 partial row while it writes grad_x, then the partial rows are
//             added in order, so the result does not depend on the thread count.
// Memory traffic per element: forward reads x and writes out (2 accesses); backward reads
// grad_out and x and writes grad_x (3). torch's Linear + F.gelu makes 3 + 2 in the forward
// (addmm copies the bias into its output first, then gelu reads it and writes) and 3 + 1 in
// the backward (gelu_backward, then a sum over the rows for the bias). The erf costs more than
// the traffic on a small CPU: the float path runs 8 lanes of AVX2 with its own exp. The tanh
// form needs the same exp and one divide (gelu_math.h), and no erfc polynomial.
//
// dtypes: float32 (AVX2), float64 (the C library's erfc, the accuracy reference), bfloat16 and
// float16 through float. x and bias of one dtype; out and grad_x in it, grad_bias in bias's.
//
// History of the versions and their timings: bench/results/NOTES.md.
//
// Check: python -m pytest tests/test_bias_gelu.py
// Bench: python bench/bias_gelu_bench.py
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <initializer_list>
#include <type_traits>
#include <vector>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include "bias_gelu.h"
#include "gelu_math.h"

namespace gpt_kernels {
namespace {

namespace gm = gelu_math;

#if defined(__AVX2__) && defined(__FMA__)
// gelu_math::exp_f and two_phi on 8 lanes, operation for operation.
inline __m256 exp8(__m256 x) {
  const __m256 underflow = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i bits = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(underflow, _mm256_mul_ps(p, _mm256_castsi256_ps(bits)));
}

inline __m256 two_phi8(__m256 u, __m256* e_out) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 a = _mm256_mul_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), u), _mm256_set1_ps(gm::kSqrtHalf));
  const __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.5f), a, one));
  __m256 q = _mm256_set1_ps(gm::kQ9);
  for (const float coef : {gm::kQ8, gm::kQ7, gm::kQ6, gm::kQ5, gm::kQ4, gm::kQ3, gm::kQ2, gm::kQ1, gm::kQ0})
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(coef));
  const __m256 e = exp8(_mm256_fnmadd_ps(a, a, _mm256_setzero_ps()));
  const __m256 erfc_a = _mm256_mul_ps(_mm256_mul_ps(t, q), e);
  if (e_out != nullptr) *e_out = e;
  const __m256 negative = _mm256_cmp_ps(u, _mm256_setzero_ps(), _CMP_LT_OQ);
  return _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(2.0f), erfc_a), erfc_a, negative);
}

// gelu_math::tanh_sigmoid on 8 lanes: s = sigmoid(2z), e = exp(-2|z|), r = 1 / (1 + e).
inline __m256 tanh_sigmoid8(__m256 u, __m256* e_out, __m256* r_out) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 inner = _mm256_fmadd_ps(_mm256_set1_ps(gm::kTanhCubic), _mm256_mul_ps(u, u), one);
  const __m256 z2 = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(gm::kTwoSqrt2OverPi), u), inner);
  const __m256 e = exp8(_mm256_or_ps(z2, _mm256_set1_ps(-0.0f)));  // -|2z|
  const __m256 r = _mm256_div_ps(one, _mm256_add_ps(one, e));
  *e_out = e;
  *r_out = r;
  const __m256 negative = _mm256_cmp_ps(z2, _mm256_setzero_ps(), _CMP_LT_OQ);
  return _mm256_blendv_ps(r, _mm256_mul_ps(e, r), negative);
}
#endif

// One row of the tanh form, float: out = gelu_tanh(x + b).
void forward_row_tanh(const float* x, const float* b, float* out, int64_t n) {
  int64_t c = 0;
#if defined(__AVX2__) && defined(__FMA__)
  for (; c + 8 <= n; c += 8) {
    const __m256 u = _mm256_add_ps(_mm256_loadu_ps(x + c), _mm256_loadu_ps(b + c));
    __m256 e, r;
    const __m256 s = tanh_sigmoid8(u, &e, &r);
    const __m256 zero = _mm256_cmp_ps(s, _mm256_setzero_ps(), _CMP_EQ_OQ);  // gelu_math::gelu_tanh
    _mm256_storeu_ps(out + c, _mm256_andnot_ps(zero, _mm256_mul_ps(u, s)));
  }
#endif
  for (; c < n; ++c) out[c] = gm::gelu_tanh(x[c] + b[c]);
}

// One row of the tanh form: grad_x = g * gelu_tanh'(x + b), and acc += grad_x.
void backward_row_tanh(const float* g, const float* x, const float* b, float* grad_x, float* acc,
                       int64_t n) {
  int64_t c = 0;
#if defined(__AVX2__) && defined(__FMA__)
  const __m256 one = _mm256_set1_ps(1.0f);
  for (; c + 8 <= n; c += 8) {
    const __m256 u = _mm256_add_ps(_mm256_loadu_ps(x + c), _mm256_loadu_ps(b + c));
    __m256 e, r;
    const __m256 s = tanh_sigmoid8(u, &e, &r);
    // u (2 sqrt(2 / pi) e r r) (1 + 0.134145 u^2), 0 where e is 0 (u * 0 := 0)
    const __m256 slope = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(gm::kTwoSqrt2OverPi), e),
                                       _mm256_mul_ps(r, r));
    const __m256 cubic = _mm256_fmadd_ps(_mm256_set1_ps(gm::kTanhCubic3), _mm256_mul_ps(u, u), one);
    const __m256 e_zero = _mm256_cmp_ps(e, _mm256_setzero_ps(), _CMP_EQ_OQ);
    const __m256 term = _mm256_andnot_ps(e_zero, _mm256_mul_ps(_mm256_mul_ps(u, slope), cubic));
    const __m256 gx = _mm256_mul_ps(_mm256_loadu_ps(g + c), _mm256_add_ps(s, term));
    _mm256_storeu_ps(grad_x + c, gx);
    _mm256_storeu_ps(acc + c, _mm256_add_ps(_mm256_loadu_ps(acc + c), gx));
  }
#endif
  for (; c < n; ++c) {
    const float gx = g[c] * gm::gelu_tanh_grad(x[c] + b[c]);
    grad_x[c] = gx;
    acc[c] += gx;
  }
}

// One row of n float elements: out = gelu(x + b) (gelu_tanh with tanh).
void forward_row(const float* x, const float* b, float* out, int64_t n, bool tanh) {
  if (tanh) return forward_row_tanh(x, b, out, n);
  int64_t c = 0;
#if defined(__AVX2__) && defined(__FMA__)
  const __m256 half = _mm256_set1_ps(0.5f);
  for (; c + 8 <= n; c += 8) {
    const __m256 u = _mm256_add_ps(_mm256_loadu_ps(x + c), _mm256_loadu_ps(b + c));
    const __m256 phi2 = two_phi8(u, nullptr);
    const __m256 zero = _mm256_cmp_ps(phi2, _mm256_setzero_ps(), _CMP_EQ_OQ);  // gelu_math::gelu
    _mm256_storeu_ps(out + c, _mm256_andnot_ps(zero, _mm256_mul_ps(_mm256_mul_ps(half, u), phi2)));
  }
#endif
  for (; c < n; ++c) out[c] = gm::gelu(x[c] + b[c]);
}

// One row: grad_x = g * gelu'(x + b), and acc += grad_x (the block's partial bias gradient).
void backward_row(const float* g, const float* x, const float* b, float* grad_x, float* acc, int64_t n,
                  bool tanh) {
  if (tanh) return backward_row_tanh(g, x, b, grad_x, acc, n);
  int64_t c = 0;
#if defined(__AVX2__) && defined(__FMA__)
  const __m256 half = _mm256_set1_ps(0.5f), inv_sqrt_2pi = _mm256_set1_ps(gm::kInvSqrt2Pi);
  for (; c + 8 <= n; c += 8) {
    const __m256 u = _mm256_add_ps(_mm256_loadu_ps(x + c), _mm256_loadu_ps(b + c));
    __m256 e;
    const __m256 phi2 = two_phi8(u, &e);
    const __m256 e_zero = _mm256_cmp_ps(e, _mm256_setzero_ps(), _CMP_EQ_OQ);  // u * 0 := 0
    const __m256 ue = _mm256_andnot_ps(e_zero, _mm256_mul_ps(u, e));
    const __m256 d = _mm256_fmadd_ps(half, phi2, _mm256_mul_ps(ue, inv_sqrt_2pi));
    const __m256 gx = _mm256_mul_ps(_mm256_loadu_ps(g + c), d);
    _mm256_storeu_ps(grad_x + c, gx);
    _mm256_storeu_ps(acc + c, _mm256_add_ps(_mm256_loadu_ps(acc + c), gx));
  }
#endif
  for (; c < n; ++c) {
    const float gx = g[c] * gm::gelu_grad(x[c] + b[c]);
    grad_x[c] = gx;
    acc[c] += gx;
  }
}

void forward_row(const double* x, const double* b, double* out, int64_t n, bool tanh) {
  for (int64_t c = 0; c < n; ++c) out[c] = gm::gelu_any(x[c] + b[c], tanh);
}

void backward_row(const double* g, const double* x, const double* b, double* grad_x, double* acc,
                  int64_t n, bool tanh) {
  for (int64_t c = 0; c < n; ++c) {
    const double gx = g[c] * gm::gelu_any_grad(x[c] + b[c], tanh);
    grad_x[c] = gx;
    acc[c] += gx;
  }
}

// float32 and float64 run in their own type (acc_type, common.h); bfloat16 and float16 go
// through float rows.
template <typename T>
constexpr bool kNative = std::is_same_v<T, float> || std::is_same_v<T, double>;

template <typename T>
void to_acc_row(const T* src, acc_type<T>* dst, int64_t n) {
  for (int64_t c = 0; c < n; ++c) dst[c] = static_cast<acc_type<T>>(src[c]);
}

template <typename T>
void from_acc_row(const acc_type<T>* src, T* dst, int64_t n) {
  for (int64_t c = 0; c < n; ++c) dst[c] = static_cast<T>(src[c]);
}

// Rows per task: about 64K elements, so small inputs stay on one thread.
int64_t row_grain(int64_t n) { return std::max<int64_t>(1, 65536 / std::max<int64_t>(n, 1)); }

template <typename T>
void forward_cpu(const T* x, const T* bias, T* out, int64_t rows, int64_t n, bool tanh) {
  using A = acc_type<T>;
  std::vector<A> b(bias, bias + n);  // the bias in the arithmetic type, once
  at::parallel_for(0, rows, row_grain(n), [&](int64_t begin, int64_t end) {
    if constexpr (kNative<T>) {
      for (int64_t r = begin; r < end; ++r) forward_row(x + r * n, b.data(), out + r * n, n, tanh);
    } else {
      std::vector<A> xr(n), outr(n);
      for (int64_t r = begin; r < end; ++r) {
        to_acc_row(x + r * n, xr.data(), n);
        forward_row(xr.data(), b.data(), outr.data(), n, tanh);
        from_acc_row(outr.data(), out + r * n, n);
      }
    }
  });
}

template <typename T>
void backward_cpu(const T* grad, const T* x, const T* bias, T* grad_x, T* grad_bias, int64_t rows,
                  int64_t n, bool tanh) {
  using A = acc_type<T>;
  std::vector<A> b(bias, bias + n);
  const int64_t blocks = (rows + kBiasGeluRowBlock - 1) / kBiasGeluRowBlock;
  std::vector<A> partial(static_cast<size_t>(blocks) * n, A(0));  // (blocks, n)
  const int64_t block_grain = std::max<int64_t>(1, row_grain(n) / kBiasGeluRowBlock);
  at::parallel_for(0, blocks, block_grain, [&](int64_t begin, int64_t end) {
    std::vector<A> gr, xr, gxr;
    if constexpr (!kNative<T>) gr.resize(n), xr.resize(n), gxr.resize(n);
    for (int64_t blk = begin; blk < end; ++blk) {
      A* acc = partial.data() + blk * n;
      const int64_t r_end = std::min(rows, (blk + 1) * kBiasGeluRowBlock);
      for (int64_t r = blk * kBiasGeluRowBlock; r < r_end; ++r) {
        if constexpr (kNative<T>) {
          backward_row(grad + r * n, x + r * n, b.data(), grad_x + r * n, acc, n, tanh);
        } else {
          to_acc_row(grad + r * n, gr.data(), n);
          to_acc_row(x + r * n, xr.data(), n);
          backward_row(gr.data(), xr.data(), b.data(), gxr.data(), acc, n, tanh);
          from_acc_row(gxr.data(), grad_x + r * n, n);
        }
      }
    }
  });
  // grad_bias = the partial rows added in block order; columns split among threads.
  at::parallel_for(0, n, 256, [&](int64_t c0, int64_t c1) {
    std::vector<A> sum(c1 - c0, A(0));
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const A* row = partial.data() + blk * n;
      for (int64_t c = c0; c < c1; ++c) sum[c - c0] += row[c];
    }
    for (int64_t c = c0; c < c1; ++c) grad_bias[c] = static_cast<T>(sum[c - c0]);
  });
}

at::Tensor bias_gelu_cpu(const at::Tensor& x_in, const at::Tensor& bias_in, c10::string_view approximate) {
  check_bias_gelu_inputs(x_in, bias_in, "bias_gelu");
  const bool tanh = gelu_is_tanh(approximate, "bias_gelu");
  const at::Tensor x = x_in.contiguous(), bias = bias_in.contiguous();
  auto out = at::empty(x.sizes(), x.options());
  const int64_t n = x.size(-1);
  if (x.numel() == 0) return out;
  const int64_t rows = x.numel() / n;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "bias_gelu_cpu", [&] {
    forward_cpu<scalar_t>(x.data_ptr<scalar_t>(), bias.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                          rows, n, tanh);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> bias_gelu_backward_cpu(const at::Tensor& grad_in,
                                                          const at::Tensor& x_in,
                                                          const at::Tensor& bias_in,
                                                          c10::string_view approximate) {
  check_bias_gelu_backward_inputs(grad_in, x_in, bias_in);
  const bool tanh = gelu_is_tanh(approximate, "bias_gelu_backward");
  const at::Tensor grad = grad_in.contiguous(), x = x_in.contiguous(), bias = bias_in.contiguous();
  auto grad_x = at::empty(x.sizes(), x.options());
  const int64_t n = x.size(-1);
  if (x.numel() == 0) return {grad_x, at::zeros_like(bias, at::MemoryFormat::Contiguous)};
  auto grad_bias = at::empty(bias.sizes(), bias.options());
  const int64_t rows = x.numel() / n;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "bias_gelu_backward_cpu", [&] {
    backward_cpu<scalar_t>(grad.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), bias.data_ptr<scalar_t>(),
                           grad_x.data_ptr<scalar_t>(), grad_bias.data_ptr<scalar_t>(), rows, n, tanh);
  });
  return {grad_x, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(gpt_kernels, CPU, m) {
  m.impl("bias_gelu", &bias_gelu_cpu);
  m.impl("bias_gelu_backward", &bias_gelu_backward_cpu);
}

}  // namespace gpt_kernels
