// (seed, offset) of a Philox dropout mask for one call on CUDA, drawn from the CUDA generator of
// the tensors' device: its seed and an offset that every call advances, so torch.manual_seed
// governs the masks and no two calls share one. (The CPU draw is in ../rng_state.h.)
#pragma once
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>

#include <cstdint>
#include <mutex>
#include <utility>

namespace gpt_kernels {

inline std::pair<uint64_t, uint64_t> cuda_philox_seed(const at::Device& device) {
  auto gen = at::get_generator_or_default<at::CUDAGeneratorImpl>(
      std::nullopt, at::cuda::detail::getDefaultCUDAGenerator(device.index()));
  std::lock_guard<std::mutex> lock(gen->mutex_);
  return gen->philox_engine_inputs(4);
}

}  // namespace gpt_kernels
