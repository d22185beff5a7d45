// Fused cross-entropy, CPU kernel (the CUDA twin is csrc/cuda/cross_entropy.cu).
//
//   loss_i = logsumexp(x_i) - x_i[t_i]            for a row i whose target t_i != ignore_index
//   dloss/dx_ij = scale * (softmax(x_i)_j - [j == t_i]),  scale = 1/n_valid ("mean") or 1
//
// Algorithm, per row (rows spread over threads with at::parallel_for), in fp32 (fp64 for fp64
// logits), vectorized with at::vec::Vectorized:
//   1. m = max_j x_j                                   (reads the row)
//   2. e_j = exp(x_j - m), s = sum_j e_j               (reads the row again, from L1/L2; e_j is
//      written to the gradient row itself for fp32/fp64, to a per-thread scratch row otherwise)
//   3. loss = m + log(s) - x_t
//   4. g_j = e_j * scale/s, then g_t -= scale          (the gradient row, still in cache; fp32
//      streams it out with non-temporal stores: no read-for-ownership of its cache lines)
// Ignored rows get loss 0 and a zero gradient row. A row of -inf everywhere gives nan, like torch.
//
// Memory traffic (N x V logits of E bytes): forward with gradient reads the logits once from
// DRAM and writes the gradient once: 2*N*V*E bytes, the floor for a loss whose gradient must be
// written (torch eager writes and rereads log_softmax and a one-hot-like gradient: about 4x the
// traffic, 2x the memory). Loss only: N*V*E. The backward (cross_entropy_scale_grad_) is free
// for an upstream gradient of 1, else one more read and write of the gradient.
//
// Why the gradient is made in the forward (as llm.c's fused classifier does) rather than saving
// the per-row log-sum-exp for the backward: in training the upstream gradient of a mean loss is
// 1, so the fused forward is the whole job; saving lse would read the logits twice from DRAM
// every step (50% more traffic) to make the rare "none"/scaled case cheaper.
// History of the versions and their timings: bench/results/NOTES.md.
//
// Check: python -m pytest tests/test_cross_entropy.py   (float64 reference, gradcheck, opcheck)
// Bench: python bench/loss_bench.py [--quick] [--device cpu]

// ATen's Vectorized<float> is 8-wide AVX2 only where CPU_CAPABILITY_AVX2 is defined (ATen's
// build defines it per kernel file); otherwise it is a plain array looping over std::exp, 6x
// slower. setup.py compiles with -march=native: turn it on when the compiler may use AVX2 and
// FMA. (fp64, used for gradcheck, stays scalar: its vectorized exp would need Sleef.)
#if defined(__AVX2__) && defined(__FMA__) && !defined(CPU_CAPABILITY_AVX2)
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#endif

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#if defined(CPU_CAPABILITY_AVX2)
#include <immintrin.h>
#endif
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "cross_entropy.h"

namespace gpt_kernels {
namespace {

using at::vec::Vectorized;

template <typename acc_t>
inline Vectorized<acc_t> vexp(const Vectorized<acc_t>& v);
// exp_u20: <= 20 ulp (2.4e-6 relative), and exp(-inf) = exp(x < ln FLT_MIN) = 0 as needed.
template <>
inline Vectorized<float> vexp(const Vectorized<float>& v) { return v.exp_u20(); }
template <>
inline Vectorized<double> vexp(const Vectorized<double>& v) {
  return v.map([](double a) { return std::exp(a); });
}

// The last, partial vector of a row, padded with -inf (exp(-inf - m) = 0, max ignores it).
template <typename acc_t>
inline Vectorized<acc_t> load_tail(const acc_t* p, int64_t count) {
  alignas(64) acc_t buf[Vectorized<acc_t>::size()];
  for (int64_t k = 0; k < Vectorized<acc_t>::size(); ++k)
    buf[k] = k < count ? p[k] : -std::numeric_limits<acc_t>::infinity();
  return Vectorized<acc_t>::loadu(buf);
}

template <typename acc_t>
inline acc_t row_max(const acc_t* x, int64_t V) {
  using Vec = Vectorized<acc_t>;
  constexpr int64_t W = Vec::size();
  Vec m0(-std::numeric_limits<acc_t>::infinity()), m1 = m0;  // two chains: max has latency
  int64_t j = 0;
  for (; j + 2 * W <= V; j += 2 * W) {
    m0 = at::vec::maximum(m0, Vec::loadu(x + j));
    m1 = at::vec::maximum(m1, Vec::loadu(x + j + W));
  }
  for (; j + W <= V; j += W) m0 = at::vec::maximum(m0, Vec::loadu(x + j));
  if (j < V) m1 = at::vec::maximum(m1, load_tail(x + j, V - j));
  return at::vec::vec_reduce_all<acc_t>(
      [](Vec& a, Vec& b) { return at::vec::maximum(a, b); }, at::vec::maximum(m0, m1));
}

// s = sum_j exp(x_j - m); when e != nullptr also stores e_j = exp(x_j - m) (e may alias x:
// each element is read before it is written).
template <typename acc_t>
inline acc_t row_sum_exp(const acc_t* x, acc_t* e, int64_t V, acc_t m) {
  using Vec = Vectorized<acc_t>;
  constexpr int64_t W = Vec::size();
  const Vec vm(m);
  Vec s0(0), s1(0);
  int64_t j = 0;
  for (; j + 2 * W <= V; j += 2 * W) {
    Vec a = vexp(Vec::loadu(x + j) - vm), b = vexp(Vec::loadu(x + j + W) - vm);
    if (e) { a.store(e + j); b.store(e + j + W); }
    s0 = s0 + a;
    s1 = s1 + b;
  }
  for (; j + W <= V; j += W) {
    Vec a = vexp(Vec::loadu(x + j) - vm);
    if (e) a.store(e + j);
    s0 = s0 + a;
  }
  if (j < V) {
    Vec a = vexp(load_tail(x + j, V - j) - vm);
    if (e) a.store(e + j, static_cast<int>(V - j));
    s1 = s1 + a;
  }
  return at::vec::vec_reduce_all<acc_t>([](Vec& a, Vec& b) { return a + b; }, s0 + s1);
}

// g[j] = e[j] * k with non-temporal (streaming) stores: the gradient goes to memory without
// first reading its cache lines (a normal store to a line not in cache reads it: 50% more
// traffic). The caller issues _mm_sfence() before other threads may read g.
inline void scale_stream(const float* e, float* g, int64_t V, float k) {
  int64_t j = 0;
#if defined(CPU_CAPABILITY_AVX2)
  for (; j < V && (reinterpret_cast<uintptr_t>(g + j) & 31) != 0; ++j) g[j] = e[j] * k;
  const __m256 vk = _mm256_set1_ps(k);
  for (; j + 8 <= V; j += 8) _mm256_stream_ps(g + j, _mm256_mul_ps(_mm256_loadu_ps(e + j), vk));
#endif
  for (; j < V; ++j) g[j] = e[j] * k;
}

// One row: returns its loss; when g != nullptr writes its gradient (g may alias x: in-place).
// xbuf/ebuf: per-thread scratch rows of V acc_t. xbuf holds the widened row of a 16-bit type;
// ebuf the e_j = exp(x_j - m) of step 2, except in place (fp32/fp64), where the gradient row
// itself is the scratch: its cache lines were just read, so writing them twice costs nothing.
template <typename scalar_t, typename acc_t>
acc_t ce_row(const scalar_t* x, scalar_t* g, int64_t V, int64_t t, acc_t scale, acc_t* xbuf,
             acc_t* ebuf) {
  constexpr bool same = std::is_same_v<scalar_t, acc_t>;
  const acc_t* xs;
  if constexpr (same) {
    xs = x;
  } else {  // widen once; the two passes below then read fp32 from cache
    for (int64_t j = 0; j < V; ++j) xbuf[j] = static_cast<acc_t>(x[j]);
    xs = xbuf;
  }
  const acc_t xt = xs[t];  // before the row may be overwritten (in-place)
  const acc_t m = row_max(xs, V);
  const bool in_place = static_cast<const void*>(g) == static_cast<const void*>(x);
  constexpr bool stream = std::is_same_v<scalar_t, float>;  // fp64 (gradcheck only): plain
  acc_t* e = nullptr;
  if (g) {
    if constexpr (same && !stream) e = g;
    else e = (same && in_place) ? reinterpret_cast<acc_t*>(g) : ebuf;
  }
  const acc_t s = row_sum_exp(xs, e, V, m);
  const acc_t loss = m + std::log(s) - xt;
  if (g) {
    using Vec = Vectorized<acc_t>;
    const acc_t k = scale / s;
    if constexpr (stream) {
      if (!in_place) {
        e[t] -= s;  // (e_t - s) * scale/s = (p_t - 1) * scale: the target's gradient
        scale_stream(e, g, V, k);
        return loss;
      }
    }
    if constexpr (same) {
      at::vec::map([k](Vec v) { return v * Vec(k); }, g, g, V);
      g[t] -= scale;
    } else {
      for (int64_t j = 0; j < V; ++j) g[j] = static_cast<scalar_t>(e[j] * k);
      g[t] = static_cast<scalar_t>(e[t] * k - scale);
    }
  }
  return loss;
}

// Counts the rows that are not ignored, and rejects a target outside [0, V) before any work.
int64_t check_targets_cpu(const at::Tensor& targets, int64_t V, int64_t ignore_index) {
  const int64_t* t = targets.data_ptr<int64_t>();
  int64_t n_valid = 0;
  for (int64_t i = 0; i < targets.numel(); ++i) {
    if (t[i] == ignore_index) continue;
    TORCH_CHECK(t[i] >= 0 && t[i] < V, "cross_entropy: target ", t[i], " at row ", i,
                " is outside [0, ", V, ") and is not ignore_index (", ignore_index, ")");
    ++n_valid;
  }
  return n_valid;
}

// logits: contiguous (N, V); grad: contiguous (N, V) (may be logits itself) or undefined.
// Returns the loss in float32 (float64 for float64 logits), as F.cross_entropy under autocast:
// a 16-bit loss would round the logged loss to ~0.03 and overflow a GradScaler's first step.
at::Tensor ce_run_cpu(const at::Tensor& logits, const at::Tensor& targets, int64_t ignore_index,
                      int reduction, int64_t n_valid, at::Tensor* grad) {
  const int64_t N = logits.size(0), V = logits.size(1);
  at::Tensor row_loss = at::empty({N}, logits.options().dtype(acc_dtype(logits.scalar_type())));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "ce_cpu", [&] {
    using acc_t = acc_type<scalar_t>;
    const scalar_t* x = logits.data_ptr<scalar_t>();
    scalar_t* g = grad ? grad->data_ptr<scalar_t>() : nullptr;
    const int64_t* t = targets.data_ptr<int64_t>();
    acc_t* out = row_loss.data_ptr<acc_t>();
    const acc_t scale = reduction == kCeMean ? acc_t(1) / acc_t(n_valid) : acc_t(1);
    const int64_t grain = std::max<int64_t>(1, 32768 / V);  // >= ~128 KB of logits per task
    at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> xbuf, ebuf;
      if constexpr (!std::is_same_v<scalar_t, acc_t>) xbuf.resize(V);
      if (g) ebuf.resize(V);
      for (int64_t i = begin; i < end; ++i) {
        const scalar_t* xi = x + i * V;  // 64-bit offsets: N * V may exceed 2^31
        scalar_t* gi = g ? g + i * V : nullptr;
        if (t[i] == ignore_index) {
          out[i] = 0;
          if (gi) std::fill(gi, gi + V, scalar_t(0));
          continue;
        }
        out[i] = ce_row<scalar_t, acc_t>(xi, gi, V, t[i], scale, xbuf.data(), ebuf.data());
      }
#if defined(CPU_CAPABILITY_AVX2)
      _mm_sfence();  // the streaming stores are visible before the chunk counts as done
#endif
    });
  });
  if (reduction == kCeNone) return row_loss;
  at::Tensor total = row_loss.sum();
  if (reduction == kCeMean) total = total / static_cast<double>(n_valid);  // 0/0 = nan, as torch
  return total;
}

std::tuple<at::Tensor, at::Tensor> ce_fwd_cpu(const at::Tensor& logits_in,
                                              const at::Tensor& targets_in, int64_t ignore_index,
                                              c10::string_view reduction_name, bool compute_grad) {
  ce_check_inputs(logits_in, targets_in);
  const int reduction = ce_reduction(reduction_name);
  const at::Tensor logits = logits_in.contiguous(), targets = targets_in.contiguous();
  const int64_t n_valid = check_targets_cpu(targets, logits.size(1), ignore_index);
  at::Tensor grad;
  if (compute_grad) grad = at::empty_like(logits, at::MemoryFormat::Contiguous);
  at::Tensor loss = ce_run_cpu(logits, targets, ignore_index, reduction, n_valid,
                               compute_grad ? &grad : nullptr);
  if (!compute_grad) grad = at::empty({0}, logits.options());
  return {loss, grad};
}

at::Tensor ce_fwd_inplace_cpu(at::Tensor& logits, const at::Tensor& targets_in,
                              int64_t ignore_index, c10::string_view reduction_name) {
  ce_check_inputs(logits, targets_in);
  const int reduction = ce_reduction(reduction_name);
  const at::Tensor targets = targets_in.contiguous();
  const int64_t n_valid = check_targets_cpu(targets, logits.size(1), ignore_index);
  if (logits.is_contiguous()) {
    at::Tensor grad = logits;
    return ce_run_cpu(logits, targets, ignore_index, reduction, n_valid, &grad);
  }
  at::Tensor x = logits.contiguous();  // a strided view: compute in a copy, then write back
  at::Tensor loss = ce_run_cpu(x, targets, ignore_index, reduction, n_valid, &x);
  logits.copy_(x);
  return loss;
}

void ce_scale_grad_cpu(at::Tensor& grad, const at::Tensor& grad_loss, const at::Tensor& targets_in,
                       int64_t ignore_index, c10::string_view reduction_name) {
  const int reduction = ce_reduction(reduction_name);
  ce_check_scale_args(grad, grad_loss, targets_in, reduction);
  const at::Tensor scales = ce_upstream_factors(grad_loss, grad);
  const at::Tensor targets = targets_in.contiguous();
  if (reduction != kCeNone && scales.item<double>() == 1.0) return;  // the usual case: free
  at::Tensor g = grad.is_contiguous() ? grad : grad.contiguous();
  const int64_t N = g.size(0), V = g.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, g.scalar_type(), "ce_scale_cpu", [&] {
    using acc_t = acc_type<scalar_t>;
    scalar_t* gp = g.data_ptr<scalar_t>();
    const acc_t* sp = scales.data_ptr<acc_t>();
    const int64_t* t = targets.data_ptr<int64_t>();
    at::parallel_for(0, N, std::max<int64_t>(1, 32768 / V), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const acc_t s = sp[reduction == kCeNone ? i : 0];
        if (t[i] == ignore_index || s == acc_t(1)) continue;  // ignored rows stay exactly 0
        scalar_t* gi = gp + i * V;
        for (int64_t j = 0; j < V; ++j) gi[j] = static_cast<scalar_t>(static_cast<acc_t>(gi[j]) * s);
      }
    });
  });
  if (!g.is_same(grad)) grad.copy_(g);
}

// The backward for float16 logits (any dtype works): grad = upstream * d loss / d logits,
// recomputed from the logits in fp32 and rounded once. The forward's gradient is already final
// for an upstream factor of exactly 1, so such rows (all of them for a "mean" or "sum"
// loss.backward()) are skipped; any other factor (a GradScaler's 65536, a weighted "none" loss)
// would round twice if it rescaled the stored gradient, and (p - y) / N under 2^-24 would
// already have flushed to 0.
void ce_regrad_cpu(at::Tensor& grad, const at::Tensor& logits_in, const at::Tensor& grad_loss,
                   const at::Tensor& targets_in, int64_t ignore_index,
                   c10::string_view reduction_name) {
  const int reduction = ce_reduction(reduction_name);
  ce_check_inputs(logits_in, targets_in);
  ce_check_regrad_args(grad, logits_in, grad_loss, targets_in, reduction);
  const at::Tensor factors = ce_upstream_factors(grad_loss, grad);
  if (reduction != kCeNone && factors.item<double>() == 1.0) return;  // the usual case: free
  const at::Tensor targets = targets_in.contiguous();
  const int64_t V = logits_in.size(1);
  const int64_t n_valid = check_targets_cpu(targets, V, ignore_index);
  const at::Tensor logits = logits_in.contiguous();
  at::Tensor g = grad.is_contiguous() ? grad : grad.contiguous();
  const int64_t N = g.size(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, g.scalar_type(), "ce_regrad_cpu", [&] {
    using acc_t = acc_type<scalar_t>;
    const scalar_t* x = logits.data_ptr<scalar_t>();
    scalar_t* gp = g.data_ptr<scalar_t>();
    const acc_t* fp = factors.data_ptr<acc_t>();
    const int64_t* t = targets.data_ptr<int64_t>();
    const acc_t base = reduction == kCeMean ? acc_t(1) / acc_t(n_valid) : acc_t(1);
    at::parallel_for(0, N, std::max<int64_t>(1, 32768 / V), [&](int64_t begin, int64_t end) {
      std::vector<acc_t> xbuf, ebuf(V);
      if constexpr (!std::is_same_v<scalar_t, acc_t>) xbuf.resize(V);
      for (int64_t i = begin; i < end; ++i) {
        const acc_t factor = fp[reduction == kCeNone ? i : 0];
        if (t[i] == ignore_index || factor == acc_t(1)) continue;  // the forward's row stands
        ce_row<scalar_t, acc_t>(x + i * V, gp + i * V, V, t[i], base * factor, xbuf.data(),
                                ebuf.data());
      }
#if defined(CPU_CAPABILITY_AVX2)
      _mm_sfence();
#endif
    });
  });
  if (!g.is_same(grad)) grad.copy_(g);
}

// The public op: the fused forward when the logits need a gradient, the loss-only one otherwise.
// A CompositeImplicitAutograd kernel, so autograd and torch.compile see cross_entropy_fwd, whose
// autograd formula and fake implementation are registered in gpt_kernels/cross_entropy.py.
at::Tensor cross_entropy(const at::Tensor& logits, const at::Tensor& targets, int64_t ignore_index,
                         c10::string_view reduction) {
  static const auto fwd = typed_op<std::tuple<at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, int64_t, c10::string_view, bool)>("gpt_kernels::cross_entropy_fwd");
  const bool compute_grad = at::GradMode::is_enabled() && logits.requires_grad();
  return std::get<0>(fwd.call(logits, targets, ignore_index, reduction, compute_grad));
}

}  // namespace

TORCH_LIBRARY_IMPL(gpt_kernels, CompositeImplicitAutograd, m) {
  m.impl("cross_entropy", &cross_entropy);
}

TORCH_LIBRARY_IMPL(gpt_kernels, CPU, m) {
  m.impl("cross_entropy_fwd", &ce_fwd_cpu);
  m.impl("cross_entropy_fwd_inplace", &ce_fwd_inplace_cpu);
  m.impl("cross_entropy_scale_grad_", &ce_scale_grad_cpu);
  m.impl("cross_entropy_regrad_", &ce_regrad_cpu);
}

}  // namespace gpt_kernels
