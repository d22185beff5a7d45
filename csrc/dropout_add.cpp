// Fused residual dropout: out = residual + dropout(x, p), the CPU kernel and the op glue shared
// by both backends (argument checks, dtype rule, the composite dropout_add). The CUDA twin is
// csrc/cuda/dropout_add.cu (same formulas, same mask).
//
// Algorithm: element n of the flattened tensors is kept when 16 random bits of a Philox call
// on counter (n / 8, stream, offset) reach the threshold round(p * 65536) (philox_dropout.h:
// dropout_add_keep8; one call serves 8 neighbours), so
//   forward   out[n] = residual[n] + x[n] * Z[n],  Z = 1/(1-p) where kept, 0 where dropped
//   backward  grad_x[n] = grad_out[n] * Z[n]  (Z regenerated from (seed, offset), never stored)
//             grad_residual = grad_out         (the same tensor, no copy)
// With no residual, out = dropout(x) (the embedding dropout). p = 0 runs a plain add.
// Memory traffic per element: forward reads x and residual and writes out (3 accesses; torch's
// x + F.dropout(x) makes 7, with bernoulli_ writing a mask that it keeps for the backward);
// backward reads grad_out and writes grad_x (2; torch: 3). The Philox work (10 rounds per 8
// elements) runs in AVX2 lanes, 64 elements per call of keep_factors64 (philox_cpu.h).
//
// dtypes: x and residual of the same floating dtype, or a float32 residual with a bfloat16 or
// float16 x (the residual stream of a bf16-autocast model); the composite promotes any other
// mix. Arithmetic in float32 (float64 for float64).
//
// History of the versions and their timings: bench/results/NOTES.md.
//
// Check: python -m pytest tests/test_dropout_add.py
// Bench: python bench/dropout_add_bench.py
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <type_traits>

#include "common.h"
#include "dropout_add.h"
#include "philox_cpu.h"
#include "philox_dropout.h"

namespace gpt_kernels {
namespace {

constexpr int64_t kBlock = 64;          // elements per keep_factors64 call (8 Philox calls)
constexpr int64_t kGrainBlocks = 1024;  // 64K elements per task: small tensors stay on one thread

// Z of elements [n0, n0 + 64), n0 a multiple of 64.
template <typename A>
inline void block_factors(A* z, A keep_scale, int64_t n0, uint64_t seed, uint64_t offset,
                          uint32_t threshold) {
  const uint64_t group = static_cast<uint64_t>(n0) / 8;  // a multiple of 8: no carry into word 1
  keep_factors64(z, keep_scale, static_cast<uint32_t>(group), static_cast<uint32_t>(group >> 32),
                 kDropoutAddStream, static_cast<uint32_t>(offset), seed, threshold);
}

// XT: x's dtype, OT: residual's and out's dtype.
template <typename XT, typename OT, bool kDropout>
void forward_cpu(const XT* x, const OT* residual, OT* out, int64_t n, double p, uint64_t seed,
                 uint64_t offset) {
  using A = acc_type<OT>;
  const A keep_scale = static_cast<A>(1.0 / (1.0 - p));
  const uint32_t threshold = dropout_threshold(static_cast<float>(p));
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  at::parallel_for(0, blocks, kGrainBlocks, [&](int64_t begin, int64_t end) {
    alignas(64) A z[kBlock];
    for (int64_t b = begin; b < end; ++b) {
      const int64_t n0 = b * kBlock, count = std::min(kBlock, n - n0);
      const XT* xb = x + n0;
      OT* ob = out + n0;
      if constexpr (kDropout) {
        block_factors(z, keep_scale, n0, seed, offset, threshold);
      } else {
        std::fill(z, z + kBlock, A(1));
      }
      if (residual != nullptr) {
        const OT* rb = residual + n0;
#pragma omp simd
        for (int64_t c = 0; c < count; ++c)
          ob[c] = static_cast<OT>(static_cast<A>(rb[c]) + static_cast<A>(xb[c]) * z[c]);
      } else {
#pragma omp simd
        for (int64_t c = 0; c < count; ++c) ob[c] = static_cast<OT>(static_cast<A>(xb[c]) * z[c]);
      }
    }
  });
}

// GT: grad_out's dtype (out's), XT: grad_x's dtype (x's).
template <typename GT, typename XT>
void backward_cpu(const GT* grad, XT* grad_x, int64_t n, double p, uint64_t seed, uint64_t offset) {
  using A = acc_type<GT>;
  const A keep_scale = static_cast<A>(1.0 / (1.0 - p));
  const uint32_t threshold = dropout_threshold(static_cast<float>(p));
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  at::parallel_for(0, blocks, kGrainBlocks, [&](int64_t begin, int64_t end) {
    alignas(64) A z[kBlock];
    for (int64_t b = begin; b < end; ++b) {
      const int64_t n0 = b * kBlock, count = std::min(kBlock, n - n0);
      block_factors(z, keep_scale, n0, seed, offset, threshold);
#pragma omp simd
      for (int64_t c = 0; c < count; ++c)
        grad_x[n0 + c] = static_cast<XT>(static_cast<A>(grad[n0 + c]) * z[c]);
    }
  });
}

// Calls fn(XT{}, OT{}) with the C++ types of (x dtype, out dtype) for the pairs the kernels take.
template <typename Fn>
void dispatch_pair(at::ScalarType x_dtype, at::ScalarType out_dtype, Fn&& fn) {
  if (x_dtype == out_dtype) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x_dtype, "dropout_add_cpu",
                                    [&] { fn(scalar_t{}, scalar_t{}); });
  } else if (x_dtype == at::kBFloat16) {
    fn(at::BFloat16{}, float{});
  } else {
    fn(at::Half{}, float{});
  }
}

std::tuple<at::Tensor, at::Tensor> dropout_add_forward_cpu(const at::Tensor& x_in,
                                                           const std::optional<at::Tensor>& residual_in,
                                                           double p, std::optional<int64_t> seed_arg) {
  check_dropout_add_forward(x_in, residual_in, p);
  const at::Tensor x = x_in.contiguous();
  const std::optional<at::Tensor> residual = contiguous_or_none(residual_in);
  const auto out_dtype = residual.has_value() ? residual->scalar_type() : x.scalar_type();
  auto out = at::empty(x.sizes(), x.options().dtype(out_dtype));
  const auto [seed, offset, rng_state] = dropout_seed(p, seed_arg, cpu_philox_seed);
  const int64_t n = x.numel();
  if (n == 0) return {out, rng_state};
  dispatch_pair(x.scalar_type(), out_dtype, [&](auto x_tag, auto o_tag) {
    using XT = decltype(x_tag);
    using OT = decltype(o_tag);
    const OT* r = residual.has_value() ? residual->data_ptr<OT>() : nullptr;
    const auto run = p > 0 ? forward_cpu<XT, OT, true> : forward_cpu<XT, OT, false>;
    run(x.data_ptr<XT>(), r, out.data_ptr<OT>(), n, p, seed, offset);
  });
  return {out, rng_state};
}

at::Tensor dropout_add_backward_cpu(const at::Tensor& grad_in, const at::Tensor& rng_state,
                                    double p, at::ScalarType grad_x_dtype) {
  check_dropout_add_backward(grad_in, rng_state, p, grad_x_dtype);
  const at::Tensor grad = grad_in.contiguous();
  if (p == 0) return grad.to(grad_x_dtype, /*non_blocking=*/false, /*copy=*/true);
  auto grad_x = at::empty(grad.sizes(), grad.options().dtype(grad_x_dtype));
  const int64_t n = grad.numel();
  if (n == 0) return grad_x;
  const auto [seed, offset] = read_rng_state(rng_state, "dropout_add_backward");
  dispatch_pair(grad_x_dtype, grad.scalar_type(), [&](auto x_tag, auto g_tag) {
    using XT = decltype(x_tag);
    using GT = decltype(g_tag);
    backward_cpu<GT, XT>(grad.data_ptr<GT>(), grad_x.data_ptr<XT>(), n, p, seed, offset);
  });
  return grad_x;
}

// The public op: checks, the dtype rule, and the forward (whose autograd formula is registered
// in gpt_kernels/dropout_add.py). Composite, so it runs for every backend.
at::Tensor dropout_add(const at::Tensor& x, const std::optional<at::Tensor>& residual, double p) {
  check_dropout_add_common(x, residual, p, "dropout_add");
  at::Tensor x_k = x;
  std::optional<at::Tensor> residual_k = residual;
  if (residual.has_value() && !dropout_add_pair_supported(x.scalar_type(), residual->scalar_type())) {
    const auto common = at::result_type(x, *residual);  // e.g. float64 with float32
    x_k = x.to(common);
    residual_k = residual->to(common);
  }
  static const auto op = typed_op<std::tuple<at::Tensor, at::Tensor>(
      const at::Tensor&, const std::optional<at::Tensor>&, double, std::optional<int64_t>)>(
      "gpt_kernels::dropout_add_forward");
  return std::get<0>(op.call(x_k, residual_k, p, std::nullopt));
}

// (numel,) bool: the keep-mask dropout_add applies for rng_state. For tests and for reading.
at::Tensor dropout_add_mask(int64_t numel, double p, const at::Tensor& rng_state) {
  TORCH_CHECK(numel >= 0, "dropout_add_mask: numel must be >= 0, got ", numel);
  check_probability("dropout_add_mask", "p", p);
  const auto [seed, offset] = read_rng_state(rng_state, "dropout_add_mask");
  auto mask = at::empty({numel}, at::TensorOptions().dtype(at::kBool));
  bool* m = mask.data_ptr<bool>();
  const uint32_t threshold = dropout_threshold(static_cast<float>(p));
  at::parallel_for(0, (numel + 7) / 8, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) {  // the scalar definition, not the SIMD path
      const uint32_t bits = dropout_add_keep8(seed, offset, static_cast<uint64_t>(g), threshold);
      for (int64_t e = 0; e < 8 && 8 * g + e < numel; ++e) m[8 * g + e] = (bits >> e) & 1u;
    }
  });
  return mask;
}

}  // namespace

TORCH_LIBRARY_IMPL(gpt_kernels, CompositeImplicitAutograd, m) {
  m.impl("dropout_add", &dropout_add);
}

TORCH_LIBRARY_IMPL(gpt_kernels, CPU, m) {
  m.impl("dropout_add_forward", &dropout_add_forward_cpu);
  m.impl("dropout_add_backward", &dropout_add_backward_cpu);
  m.impl("dropout_add_mask", &dropout_add_mask);
}

}  // namespace gpt_kernels
