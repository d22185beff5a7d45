// What the CUDA kernels (csrc/cuda/<op>.cu) share; CUDA headers only, no torch (so the .cu files
// compile in seconds, and under the emulator of tests/cuda_emu): the arithmetic type of each
// storage type and the conversions to and from it (fp32 for fp32/bf16/fp16, fp64 for fp64), and
// the dispatch from a DType code (../common_hd.h) to the C++ type.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <type_traits>

#include "../common_hd.h"

namespace gpt_kernels {

template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }

// Round-to-nearest-even into T.
template <typename T, typename A>
__device__ __forceinline__ T from_acc(A v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16_rn(v);
  else if constexpr (std::is_same_v<T, __half>) return __float2half_rn(v);
  else return static_cast<T>(v);
}

// fn(T{}) for the C++ type T of the DType code `dtype`; an unknown code is an invalid value.
template <typename Fn>
cudaError_t dispatch_dtype(int dtype, Fn&& fn) {
  switch (dtype) {
    case kF32: return fn(float{});
    case kF64: return fn(double{});
    case kF16: return fn(__half{});
    case kBF16: return fn(__nv_bfloat16{});
  }
  return cudaErrorInvalidValue;
}

}  // namespace gpt_kernels
