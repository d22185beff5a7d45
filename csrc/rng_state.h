// The (seed, offset) of a Philox dropout mask, as the int64[2] CPU tensor that the forward of
// causal_attention and of dropout_add returns and their backward takes back, and its draw from
// PyTorch's CPU generator. (CUDA draws from the CUDA generator in its launcher.)
#pragma once
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cstdint>
#include <mutex>
#include <utility>

namespace gpt_kernels {

inline at::Tensor make_rng_state(uint64_t seed, uint64_t offset) {
  auto state = at::empty({2}, at::TensorOptions().dtype(at::kLong));
  state.data_ptr<int64_t>()[0] = static_cast<int64_t>(seed);
  state.data_ptr<int64_t>()[1] = static_cast<int64_t>(offset);
  return state;
}

inline std::pair<uint64_t, uint64_t> read_rng_state(const at::Tensor& rng_state,
                                                    const char* op = "gpt_kernels") {
  TORCH_CHECK(rng_state.device().is_cpu() && rng_state.scalar_type() == at::kLong &&
                  rng_state.numel() == 2,
              op, ": rng_state must be the int64[2] CPU tensor (seed, offset) that the forward "
              "returned");
  const auto s = rng_state.contiguous();
  return {static_cast<uint64_t>(s.data_ptr<int64_t>()[0]),
          static_cast<uint64_t>(s.data_ptr<int64_t>()[1])};
}

// (seed, offset) for one call from the CPU generator: a fresh 64-bit seed, offset 0, so
// torch.manual_seed governs the mask and every call gets its own.
inline std::pair<uint64_t, uint64_t> cpu_philox_seed() {
  auto gen = at::get_generator_or_default<at::CPUGeneratorImpl>(std::nullopt,
                                                                at::detail::getDefaultCPUGenerator());
  std::lock_guard<std::mutex> lock(gen->mutex_);
  return {gen->random64(), 0};
}

}  // namespace gpt_kernels
