// cuda_emu.h: a host emulation of the subset of CUDA that csrc/cuda/*.cu use, so that those very
// files compile with g++ (-x c++) and run on the CPU in the tests (tests/test_emulated.py).
//
// What it provides:
//   - the qualifiers (__global__, __device__, __host__, __forceinline__, __launch_bounds__,
//     __align__, __shared__ as a function-local static: blocks run one at a time)
//   - threadIdx / blockIdx / blockDim / gridDim, read from the running emulated thread
//   - __syncthreads, __syncwarp, __shfl_xor_sync / __shfl_sync / __shfl_down_sync, atomicAdd
//   - __half and __nv_bfloat16 with round-to-nearest-even conversions
//   - uint4 / float4 whose copies check 16-byte alignment (a GPU faults on a misaligned
//     16-byte access; x86 would not)
//   - nvcuda::wmma m16n16k16 fragments: load/store (row/column major, ldm), fill, mma_sync
//     with fp32 accumulation; loads and stores are per lane, mma_sync is a warp collective
//   - the runtime calls the kernels' host code makes (cudaGetLastError, cudaFuncSetAttribute,
//     ...) and cuda_emu::Launch, which the build's rewrite of `k<<<g, b, smem, s>>>(args)`
//     turns launches into.
// The threads of a block are cooperatively scheduled fibers (cuda_emu.cpp) that switch only at
// barriers and warp collectives, in an order chosen by the current schedule, so every run is
// deterministic and different schedules expose missing barriers as differing results.
#pragma once

#include <math.h>  // the C math functions in the global namespace, with float overloads

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#define GK_EMU_API __attribute__((visibility("default")))

// ------------------------------------------------------------------------------------------
// Qualifiers

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// A block's static shared memory: a function-local static (one per kernel instantiation,
// shared by the block's threads; the blocks of a launch run one after another). The build
// renames the kernel file's .bss (where these land: a kernel file has no other zero-initialised
// statics) to the section gk_emu_shared, which the runtime fills with NaN at the start of every
// block. (A section attribute here would do it, but g++ 12 ignores one on the statics of a
// function template.)
#define __shared__ static

// ------------------------------------------------------------------------------------------
// Vector types

struct uint3 { unsigned int x, y, z; };
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};

namespace cuda_emu {
namespace detail {
// Reports a misaligned 16-byte access at p (the address a GPU would fault on).
void misaligned16(const void* p, bool write);
inline void check16(const void* p, bool write) {
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  asm("" : "+r"(a));  // the compiler must not fold the check from the type's alignment
  if (a & 15u) misaligned16(p, write);
}
}  // namespace detail
}  // namespace cuda_emu

// 16-byte vectors. A copy from or to memory checks that the address is 16-byte aligned, as the
// GPU's 128-bit loads and stores require: `*reinterpret_cast<uint4*>(p) = v` is a checked store.
#define GK_EMU_VEC16(NAME, T)                                                          \
  struct alignas(16) NAME {                                                            \
    T x, y, z, w;                                                                      \
    NAME() = default;                                                                  \
    constexpr NAME(T x_, T y_, T z_, T w_) : x(x_), y(y_), z(z_), w(w_) {}             \
    NAME(const NAME& o) {                                                              \
      ::cuda_emu::detail::check16(&o, false);                                          \
      std::memcpy(this, &o, 16);                                                       \
    }                                                                                  \
    NAME& operator=(const NAME& o) {                                                   \
      ::cuda_emu::detail::check16(&o, false);                                          \
      ::cuda_emu::detail::check16(this, true);                                         \
      std::memcpy(this, &o, 16);                                                       \
      return *this;                                                                    \
    }                                                                                  \
  };
GK_EMU_VEC16(uint4, unsigned int)
GK_EMU_VEC16(int4, int)
GK_EMU_VEC16(float4, float)
#undef GK_EMU_VEC16
inline uint4 make_uint4(unsigned int x, unsigned int y, unsigned int z, unsigned int w) { return uint4(x, y, z, w); }
inline int4 make_int4(int x, int y, int z, int w) { return int4(x, y, z, w); }
inline float4 make_float4(float x, float y, float z, float w) { return float4(x, y, z, w); }
struct alignas(8) float2 { float x, y; };
inline float2 make_float2(float x, float y) { return float2{x, y}; }

// ------------------------------------------------------------------------------------------
// Bit casts and integer intrinsics

inline float __int_as_float(int v) { float f; std::memcpy(&f, &v, 4); return f; }
inline int __float_as_int(float f) { int v; std::memcpy(&v, &f, 4); return v; }
inline float __uint_as_float(unsigned v) { float f; std::memcpy(&f, &v, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned v; std::memcpy(&v, &f, 4); return v; }
inline double __longlong_as_double(long long v) { double d; std::memcpy(&d, &v, 8); return d; }
inline long long __double_as_longlong(double d) { long long v; std::memcpy(&v, &d, 8); return v; }
inline unsigned __umulhi(unsigned a, unsigned b) {
  return static_cast<unsigned>((static_cast<uint64_t>(a) * b) >> 32);
}
inline float __fdividef(float a, float b) { return a / b; }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }

// ------------------------------------------------------------------------------------------
// 16-bit floating point: storage plus round-to-nearest-even conversions

namespace cuda_emu {
namespace detail {
inline uint16_t float_to_half_bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7FFFFFFFu;
  if (x >= 0x7F800000u) return static_cast<uint16_t>(sign | (x > 0x7F800000u ? 0x7E00u : 0x7C00u));
  if (x >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // rounds to >= 65520: inf
  if (x < 0x38800000u) {  // below 2^-14: a subnormal half (or zero), units of 2^-24
    if (x < 0x33000000u) return static_cast<uint16_t>(sign);  // below 2^-25: rounds to 0
    const uint32_t e = x >> 23, m = (x & 0x7FFFFFu) | 0x800000u;
    const uint32_t shift = 126 - e;  // value = m * 2^(e - 150); half units 2^-24
    uint32_t h = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  // normal: rebias the exponent, round the 13 dropped mantissa bits to nearest even
  uint32_t h = ((x >> 13) - (112u << 10));
  const uint32_t rem = x & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}
inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
  uint32_t x;
  if (e == 0x1F) x = sign | 0x7F800000u | (m << 13);
  else if (e != 0) x = sign | ((e + 112u) << 23) | (m << 13);
  else if (m == 0) x = sign;
  else {  // subnormal: normalise
    int shift = 0;
    uint32_t mm = m;
    while (!(mm & 0x400u)) { mm <<= 1; ++shift; }
    x = sign | ((113u - shift) << 23) | ((mm & 0x3FFu) << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}
inline uint16_t float_to_bf16_bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet NaN
  x += 0x7FFFu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}
inline float bf16_bits_to_float(uint16_t b) {
  const uint32_t x = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}
}  // namespace detail
}  // namespace cuda_emu

struct alignas(2) __half {
  uint16_t bits;
  __half() = default;
  __half(float f) : bits(::cuda_emu::detail::float_to_half_bits(f)) {}
  operator float() const { return ::cuda_emu::detail::half_bits_to_float(bits); }
};
struct alignas(2) __nv_bfloat16 {
  uint16_t bits;
  __nv_bfloat16() = default;
  __nv_bfloat16(float f) : bits(::cuda_emu::detail::float_to_bf16_bits(f)) {}
  operator float() const { return ::cuda_emu::detail::bf16_bits_to_float(bits); }
};
using half = __half;
using nv_bfloat16 = __nv_bfloat16;
inline __half __float2half_rn(float f) { __half h; h.bits = ::cuda_emu::detail::float_to_half_bits(f); return h; }
inline __half __float2half(float f) { return __float2half_rn(f); }
inline float __half2float(__half h) { return ::cuda_emu::detail::half_bits_to_float(h.bits); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  __nv_bfloat16 b;
  b.bits = ::cuda_emu::detail::float_to_bf16_bits(f);
  return b;
}
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
inline float __bfloat162float(__nv_bfloat16 b) { return ::cuda_emu::detail::bf16_bits_to_float(b.bits); }

// ------------------------------------------------------------------------------------------
// Runtime types and calls

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorMisalignedAddress = 716,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchFailure = 719,
  cudaErrorUnknown = 999,
};
using cudaError = cudaError_t;
struct CUstream_st;
using cudaStream_t = CUstream_st*;
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaDeviceAttr { cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 };

GK_EMU_API cudaError_t cudaGetLastError();
GK_EMU_API cudaError_t cudaPeekAtLastError();
GK_EMU_API const char* cudaGetErrorString(cudaError_t err);
GK_EMU_API cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
GK_EMU_API cudaError_t cudaDeviceSynchronize();
namespace cuda_emu {
namespace detail {
cudaError_t set_func_attribute(const void* func, cudaFuncAttribute attr, int value);
}
}  // namespace cuda_emu
template <typename F>
cudaError_t cudaFuncSetAttribute(F* func, cudaFuncAttribute attr, int value) {
  return ::cuda_emu::detail::set_func_attribute(reinterpret_cast<const void*>(func), attr, value);
}

// ------------------------------------------------------------------------------------------
// The running thread, barriers, warp collectives

namespace cuda_emu {
namespace detail {

struct ThreadState;  // cuda_emu.cpp
struct Current {
  uint3 thread_idx;
  int lane, warp;
  ThreadState* thread;
};
extern Current* g_cur;
extern uint3 g_block_idx;
extern dim3 g_block_dim, g_grid_dim;

void syncthreads(const char* file, int line);
void syncwarp(unsigned mask, const char* file, int line);
// Arrives at a warp collective with an 8-byte payload; returns the payload of src_lane (the
// lanes of the mask exchange payloads once all have arrived).
uint64_t warp_exchange(unsigned mask, uint64_t payload, int src_lane, const char* what,
                       const char* file, int line);
// mma_sync: every lane of the warp arrives with its operands; the last to arrive runs fn over
// the 32 lanes' operand pointers.
using MmaFn = void (*)(void* const (*lanes)[4]);
void warp_mma(void* d, const void* a, const void* b, const void* c, MmaFn fn, const char* file, int line);
[[noreturn]] void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
// Dynamic shared memory of the running launch (the build rewrites `extern __shared__ T name[]`
// into a pointer from here).
void* dynamic_shared_memory();

template <typename T>
inline uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of an 8-byte value at most");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <typename T>
inline T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

}  // namespace detail
}  // namespace cuda_emu

#define threadIdx (::cuda_emu::detail::g_cur->thread_idx)
#define blockIdx (::cuda_emu::detail::g_block_idx)
#define blockDim (static_cast<const dim3&>(::cuda_emu::detail::g_block_dim))
#define gridDim (static_cast<const dim3&>(::cuda_emu::detail::g_grid_dim))
constexpr int warpSize = 32;

inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ::cuda_emu::detail::syncthreads(file, line);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, const char* file = __builtin_FILE(),
                       int line = __builtin_LINE()) {
  ::cuda_emu::detail::syncwarp(mask, file, line);
}
inline void __threadfence() {}
inline void __threadfence_block() {}

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32,
                         const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  using namespace ::cuda_emu::detail;
  const int lane = g_cur->lane;
  int src = lane ^ lane_mask;
  if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;  // outside the segment: own value
  return from_bits<T>(warp_exchange(mask, to_bits(v), src, "__shfl_xor_sync", file, line));
}
template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32,
                     const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  using namespace ::cuda_emu::detail;
  const int lane = g_cur->lane;
  const int src = (lane & ~(width - 1)) + (src_lane & (width - 1));
  return from_bits<T>(warp_exchange(mask, to_bits(v), src, "__shfl_sync", file, line));
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32,
                          const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  using namespace ::cuda_emu::detail;
  const int lane = g_cur->lane;
  int src = lane + static_cast<int>(delta);
  if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;
  return from_bits<T>(warp_exchange(mask, to_bits(v), src, "__shfl_down_sync", file, line));
}

// Threads switch only at barriers and collectives, so a read-modify-write is atomic as is.
template <typename T>
inline T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}
template <typename T>
inline T atomicMax(T* p, T v) {
  const T old = *p;
  if (v > old) *p = v;
  return old;
}

// ------------------------------------------------------------------------------------------
// WMMA (m16n16k16 only: what the kernels use). Lane l holds the elements l, l + 32, ... of
// the 16 x 16 tile in row-major order (a real fragment's layout is opaque; this one is legal).

namespace nvcuda {
namespace wmma {
struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "cuda_emu: only m16n16k16 fragments");
  static constexpr int num_elements = 8;
  using element_type = T;
  T x[num_elements];
};

namespace detail {
template <typename T>
inline float to_f(T v) { return static_cast<float>(v); }
template <typename T>
inline void check_ptr(const void* p, unsigned ldm, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0)
    ::cuda_emu::detail::fail("%s: pointer %p is not 256-bit (32-byte) aligned", what, p);
  const unsigned need = 16 / sizeof(T);  // ldm: a multiple of 16 bytes
  if (ldm % need != 0)
    ::cuda_emu::detail::fail("%s: ldm %u is not a multiple of %u elements (16 bytes)", what, ldm, need);
}
inline bool is_col(row_major) { return false; }
inline bool is_col(col_major) { return true; }
}  // namespace detail

template <typename Use, typename T, typename L, typename V>
inline void fill_fragment(fragment<Use, 16, 16, 16, T, L>& f, const V& v) {
  for (int s = 0; s < 8; ++s) f.x[s] = static_cast<T>(v);
}

// matrix_a / matrix_b: element (r, c) of the tile at p[r * ldm + c] (row major) or
// p[r + c * ldm] (column major).
template <typename Use, typename T, typename L>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, L>& f, const T* p, unsigned ldm) {
  static_assert(!std::is_same_v<Use, accumulator>, "accumulator loads take a layout_t");
  detail::check_ptr<T>(p, ldm, "wmma::load_matrix_sync");
  const int lane = ::cuda_emu::detail::g_cur->lane;
  const bool col = detail::is_col(L{});
  for (int s = 0; s < 8; ++s) {
    const int idx = lane + 32 * s, r = idx / 16, c = idx % 16;
    f.x[s] = col ? p[r + c * static_cast<size_t>(ldm)] : p[r * static_cast<size_t>(ldm) + c];
  }
}
template <typename T>
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, T>& f, const T* p, unsigned ldm, layout_t layout) {
  detail::check_ptr<T>(p, ldm, "wmma::load_matrix_sync");
  const int lane = ::cuda_emu::detail::g_cur->lane;
  for (int s = 0; s < 8; ++s) {
    const int idx = lane + 32 * s, r = idx / 16, c = idx % 16;
    f.x[s] = layout == mem_col_major ? p[r + c * static_cast<size_t>(ldm)] : p[r * static_cast<size_t>(ldm) + c];
  }
}
template <typename T>
inline void store_matrix_sync(T* p, const fragment<accumulator, 16, 16, 16, T>& f, unsigned ldm, layout_t layout) {
  detail::check_ptr<T>(p, ldm, "wmma::store_matrix_sync");
  const int lane = ::cuda_emu::detail::g_cur->lane;
  for (int s = 0; s < 8; ++s) {
    const int idx = lane + 32 * s, r = idx / 16, c = idx % 16;
    (layout == mem_col_major ? p[r + c * static_cast<size_t>(ldm)] : p[r * static_cast<size_t>(ldm) + c]) = f.x[s];
  }
}

namespace detail {
// D = A B + C for the whole warp, fp32 accumulation in k order; the 16-bit inputs' products
// are exact in fp32, as on the tensor cores.
template <typename FD, typename FA, typename FB, typename FC>
void mma_lanes(void* const (*lanes)[4]) {
  float A[256], B[256], C[256];
  for (int l = 0; l < 32; ++l) {
    const auto* a = static_cast<const FA*>(lanes[l][1]);
    const auto* b = static_cast<const FB*>(lanes[l][2]);
    const auto* c = static_cast<const FC*>(lanes[l][3]);
    for (int s = 0; s < 8; ++s) {
      A[l + 32 * s] = to_f(a->x[s]);
      B[l + 32 * s] = to_f(b->x[s]);
      C[l + 32 * s] = to_f(c->x[s]);
    }
  }
  float Dm[256];
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) {
      float acc = C[i * 16 + j];
      for (int k = 0; k < 16; ++k) acc += A[i * 16 + k] * B[k * 16 + j];
      Dm[i * 16 + j] = acc;
    }
  for (int l = 0; l < 32; ++l) {
    auto* d = static_cast<FD*>(lanes[l][0]);
    for (int s = 0; s < 8; ++s) d->x[s] = static_cast<typename FD::element_type>(Dm[l + 32 * s]);
  }
}
}  // namespace detail

template <typename TA, typename LA, typename TB, typename LB, typename TC>
inline void mma_sync(fragment<accumulator, 16, 16, 16, TC>& d, const fragment<matrix_a, 16, 16, 16, TA, LA>& a,
                     const fragment<matrix_b, 16, 16, 16, TB, LB>& b, const fragment<accumulator, 16, 16, 16, TC>& c,
                     const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  using FD = fragment<accumulator, 16, 16, 16, TC>;
  ::cuda_emu::detail::warp_mma(&d, &a, &b, &c,
                               &detail::mma_lanes<FD, fragment<matrix_a, 16, 16, 16, TA, LA>,
                                                  fragment<matrix_b, 16, 16, 16, TB, LB>, FD>,
                               file, line);
}
}  // namespace wmma
}  // namespace nvcuda

// ------------------------------------------------------------------------------------------
// Launches: `k<<<grid, block, smem, stream>>>(args...)` is rewritten by the build into
// `::cuda_emu::Launch("k", __FILE__, __LINE__, __PRETTY_FUNCTION__, grid, block, smem, stream)(k, args...)`.

namespace cuda_emu {
namespace detail {
struct LaunchInfo {
  const char* name;
  const char* file;
  int line;
  const char* caller;  // the launching function's signature (its template arguments)
  dim3 grid, block;
  size_t smem;
  const void* func;
};
// Runs every block of the launch (or records the launch error); body(ctx) runs one thread.
void launch(const LaunchInfo& info, void (*body)(void*), void* ctx);
}  // namespace detail

struct Launch {
  detail::LaunchInfo info;
  Launch(const char* name, const char* file, int line, const char* caller, dim3 grid, dim3 block,
         size_t smem = 0, cudaStream_t = nullptr)
      : info{name, file, line, caller, grid, block, smem, nullptr} {}
  template <typename... P, typename... A>
  void operator()(void (*kernel)(P...), A&&... args) {
    struct Ctx {
      void (*kernel)(P...);
      std::tuple<std::decay_t<P>...> args;
    } ctx{kernel, std::tuple<std::decay_t<P>...>(std::forward<A>(args)...)};
    info.func = reinterpret_cast<const void*>(kernel);
    detail::launch(info, [](void* p) {
      Ctx& c = *static_cast<Ctx*>(p);
      std::apply(c.kernel, c.args);  // each thread gets its own copies of the parameters
    }, &ctx);
  }
};
}  // namespace cuda_emu
