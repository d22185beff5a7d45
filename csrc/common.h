// The host glue every op shares, for its CPU kernel (csrc/<op>.cpp) and its CUDA launcher
// (csrc/cuda/<op>_launcher.cpp): argument checks with one wording for every op, the dtype code
// and arithmetic type of a tensor, the (seed, offset) of a dropout mask and its int64[2]
// rng_state tensor, and the typed handle through which a composite op calls another op.
// (The torch-free part, shared with the CUDA kernels, is common_hd.h; the CUDA launchers' own
// glue is cuda/common_cuda.h.)
#pragma once
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <optional>
#include <sstream>
#include <type_traits>
#include <utility>

#include "common_hd.h"

namespace gpt_kernels {

// ---------------------------------------------------------------------------------------------
// Argument checks. Every message starts with the op's name: "<op>: <what is wrong>".

// A tensor with the name its op's messages give it.
struct Named {
  const char* name;
  const at::Tensor& tensor;
};

namespace detail {
// Fails unless what(t) is the same for every tensor: "<op>: a and b must <rule><before>; got
// a<sep><what a>, b<sep><what b><after>" ("a, b, c" for more than two).
template <typename What>
void check_all_same(const char* op, std::initializer_list<Named> ts, const char* rule,
                    const char* before, const char* sep, const char* after, What what) {
  const Named& first = *ts.begin();
  bool same = true;
  for (const Named& t : ts) same = same && what(t.tensor) == what(first.tensor);
  if (same) return;
  std::ostringstream names, got;
  size_t i = 0;
  for (const Named& t : ts) {
    names << (i == 0 ? "" : ts.size() == 2 ? " and " : ", ") << t.name;
    got << (i == 0 ? "" : ", ") << t.name << sep << what(t.tensor);
    ++i;
  }
  TORCH_CHECK(false, op, ": ", names.str(), " must ", rule, before, "; got ", got.str(), after);
}
}  // namespace detail

// e.g. "x and residual must have the same shape (no broadcasting); got x [2, 3], residual [3]"
inline void check_same_shape(const char* op, std::initializer_list<Named> ts, const char* before = "") {
  detail::check_all_same(op, ts, "have the same shape", before, " ", "",
                         [](const at::Tensor& t) { return t.sizes(); });
}

// e.g. "q, k, v must be on the same device; got q on cpu, k on cuda:0, v on cpu"
inline void check_same_device(const char* op, std::initializer_list<Named> ts) {
  detail::check_all_same(op, ts, "be on the same device", "", " on ", "",
                         [](const at::Tensor& t) { return t.device(); });
}

// e.g. "x and bias must have the same dtype; got x Float, bias Half<after>"
inline void check_same_dtype(const char* op, std::initializer_list<Named> ts, const char* after = "") {
  detail::check_all_same(op, ts, "have the same dtype", "", " ", after,
                         [](const at::Tensor& t) { return t.scalar_type(); });
}

inline void check_floating(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), op, ": ", name,
              " must be a floating-point tensor, got ", t.scalar_type());
}

// A dropout probability: p in [0, 1) (NaN fails).
inline void check_probability(const char* op, const char* name, double p, const char* suffix = "") {
  TORCH_CHECK(p >= 0.0 && p < 1.0, op, ": ", name, " must be in [0, 1), got ", p, suffix);
}

// An optional tensor argument made contiguous (the kernels index flat arrays).
inline std::optional<at::Tensor> contiguous_or_none(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(t->contiguous()) : std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// dtypes

// The arithmetic type of the kernels: float64 for float64, float32 for everything else
// (float32, bfloat16, float16), on the host (acc_type<T>, at::ScalarType) as in the CUDA
// kernels (cuda/common.cuh: Acc<T>).
template <typename T>
using acc_type = std::conditional_t<std::is_same_v<T, double>, double, float>;

inline at::ScalarType acc_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// The DType code (common_hd.h) of a floating dtype, for a CUDA kernel's parameters.
inline int dtype_code(at::ScalarType t, const char* op) {
  switch (t) {
    case at::kFloat: return kF32;
    case at::kDouble: return kF64;
    case at::kHalf: return kF16;
    case at::kBFloat16: return kBF16;
    default:
      TORCH_CHECK(false, op, ": unsupported dtype ", t, "; supported: float32, float64, float16, bfloat16");
  }
  return -1;
}

// ---------------------------------------------------------------------------------------------
// Dropout masks: (seed, offset) of Philox (philox_dropout.h), kept as the int64[2] CPU tensor
// rng_state that the forward of causal_attention and of dropout_add returns and their
// backward takes back.

inline at::Tensor make_rng_state(uint64_t seed, uint64_t offset) {
  auto state = at::empty({2}, at::TensorOptions().dtype(at::kLong));
  state.data_ptr<int64_t>()[0] = static_cast<int64_t>(seed);
  state.data_ptr<int64_t>()[1] = static_cast<int64_t>(offset);
  return state;
}

inline void check_rng_state(const at::Tensor& rng_state, const char* op) {
  TORCH_CHECK(rng_state.device().is_cpu() && rng_state.scalar_type() == at::kLong &&
                  rng_state.numel() == 2,
              op, ": rng_state must be the int64[2] CPU tensor (seed, offset) that the forward "
              "returned");
}

inline std::pair<uint64_t, uint64_t> read_rng_state(const at::Tensor& rng_state, const char* op) {
  check_rng_state(rng_state, op);
  const auto s = rng_state.contiguous();
  return {static_cast<uint64_t>(s.data_ptr<int64_t>()[0]),
          static_cast<uint64_t>(s.data_ptr<int64_t>()[1])};
}

// (seed, offset) for one call from the CPU generator: a fresh 64-bit seed, offset 0, so
// torch.manual_seed governs the mask and every call gets its own. (CUDA: cuda_philox_seed in
// cuda/common_cuda.h.)
inline std::pair<uint64_t, uint64_t> cpu_philox_seed() {
  auto gen = at::get_generator_or_default<at::CPUGeneratorImpl>(std::nullopt,
                                                                at::detail::getDefaultCPUGenerator());
  std::lock_guard<std::mutex> lock(gen->mutex_);
  return {gen->random64(), 0};
}

struct DropoutSeed {
  uint64_t seed = 0, offset = 0;
  at::Tensor rng_state;  // make_rng_state(seed, offset)
};

// The mask of one forward call: none for p = 0 (0, 0), the caller's seed (offset 0), or else
// draw() from the generator of the tensors' device (cpu_philox_seed, cuda_philox_seed), which
// then advances; a backward gets the same mask back from rng_state.
template <typename Draw>
DropoutSeed dropout_seed(double p, std::optional<int64_t> seed_arg, Draw&& draw) {
  DropoutSeed s;
  if (p > 0) {
    if (seed_arg.has_value()) s.seed = static_cast<uint64_t>(*seed_arg);
    else std::tie(s.seed, s.offset) = draw();
  }
  s.rng_state = make_rng_state(s.seed, s.offset);
  return s;
}

// ---------------------------------------------------------------------------------------------
// The handle through which a composite op (CompositeImplicitAutograd) calls another op of the
// library, so that autograd and torch.compile see the op it calls:
//   static const auto fwd = typed_op<Signature>("gpt_kernels::<op>_forward");
template <typename Signature>
c10::TypedOperatorHandle<Signature> typed_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

}  // namespace gpt_kernels
