// The glue the CUDA launchers (csrc/cuda/<op>_launcher.cpp, compiled with torch) share on top
// of ../common.h: the dropout draw from the CUDA generator, the 16-byte alignment the kernels
// need, and the check of a launch's error.
// (The kernels' own shared code, torch-free, is common.cuh.)
#pragma once
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <mutex>
#include <utility>

#include "../common.h"

namespace gpt_kernels {

// (seed, offset) of a Philox dropout mask for one call on CUDA, drawn from the CUDA generator
// of the tensors' device: its seed and an offset that every call advances, so
// torch.manual_seed governs the masks and no two calls share one. For dropout_seed (common.h).
inline std::pair<uint64_t, uint64_t> cuda_philox_seed(const at::Device& device) {
  auto gen = at::get_generator_or_default<at::CUDAGeneratorImpl>(
      std::nullopt, at::cuda::detail::getDefaultCUDAGenerator(device.index()));
  std::lock_guard<std::mutex> lock(gen->mutex_);
  return gen->philox_engine_inputs(4);
}

// Whether t's data starts 16-byte aligned: the kernels move rows as 16-byte vectors (a GPU
// faults on a misaligned one).
inline bool aligned16(const at::Tensor& t) {
  return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0;
}

// what: e.g. "bias_gelu forward" -> "bias_gelu forward kernel launch failed: <CUDA's error>".
inline void check_launch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, what, " kernel launch failed: ", cudaGetErrorString(err));
}

}  // namespace gpt_kernels
