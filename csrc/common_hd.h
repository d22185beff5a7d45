// Shared by every op and torch-free, so it compiles everywhere the kernels do (g++ for the CPU
// kernels, nvcc for csrc/cuda/*.cu, g++ again under the CUDA emulator of tests/cuda_emu): the
// qualifier of a function that runs on the host and on the device, and the dtype codes that a
// torch launcher passes to its torch-free CUDA kernels (common.h: dtype_code makes them).
#pragma once

#if defined(__CUDACC__)
#define GK_HD __host__ __device__ __forceinline__
#else
#define GK_HD inline
#endif

namespace gpt_kernels {

// The dtype of a tensor handed to a CUDA kernel as a void pointer. The values are part of the
// emulator's C interface (tests/cuda_emu/__init__.py passes them as ints).
enum DType : int { kF32 = 0, kF64 = 1, kF16 = 2, kBF16 = 3 };

}  // namespace gpt_kernels
