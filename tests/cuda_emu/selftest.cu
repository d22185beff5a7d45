// Small kernels that test the emulator itself (tests/test_cuda_emu_checks.py): WMMA semantics,
// and one kernel per error the emulator must report (divergent barriers and collectives, a
// deadlock, out-of-bounds and misaligned accesses, a stack overflow, a launch over the
// shared-memory limit).
// Built like the project's .cu files; the extern "C" functions are the entry points.
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>

using namespace nvcuda;

namespace {

// d (16 x 16 fp32, row or column major, pitch ldd) = a b + c, a and b fp16 in the given layouts.
template <typename LA, typename LB>
__global__ void wmma_kernel(const __half* a, int lda, const __half* b, int ldb, const float* c, int ldc,
                            float* d, int ldd, bool d_col) {
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, LA> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, LB> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
  wmma::load_matrix_sync(fa, a, lda);
  wmma::load_matrix_sync(fb, b, ldb);
  wmma::load_matrix_sync(fc, c, ldc, wmma::mem_row_major);
  wmma::mma_sync(fc, fa, fb, fc);
  wmma::store_matrix_sync(d, fc, ldd, d_col ? wmma::mem_col_major : wmma::mem_row_major);
}

// Each thread writes its index to shared memory and, after the barrier, reads its neighbour's.
__global__ void neighbour_kernel(int* out, bool with_barrier) {
  __shared__ int sh[256];
  sh[threadIdx.x] = static_cast<int>(threadIdx.x) * 3;
  if (with_barrier) __syncthreads();
  out[threadIdx.x] = sh[(threadIdx.x + 1) % blockDim.x];
}

__global__ void barrier_in_branch_kernel(int* out) {
  if (threadIdx.x < 32) __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void two_barriers_kernel(int* out) {
  if (threadIdx.x % 2) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

__global__ void divergent_shuffle_kernel(int* out) {
  int v = static_cast<int>(threadIdx.x);
  if (threadIdx.x % 32 < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);
  out[threadIdx.x] = v;
}

__global__ void deadlock_kernel(int* out) {
  if (threadIdx.x % 32 == 0) __syncwarp();
  __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void shuffle_kernel(const float* in, float* out) {
  float v = in[threadIdx.x];
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  out[threadIdx.x] = v;
}

// Reads element `index` of a buffer (global: out of bounds when index >= n).
__global__ void read_kernel(const float* in, int64_t index, float* out) {
  if (threadIdx.x == 0 && blockIdx.x == 0) out[0] = in[index];
}

// Reads byte `index` of the dynamic shared memory.
__global__ void smem_read_kernel(int64_t index, unsigned char* out) {
  extern __shared__ __align__(16) unsigned char dyn[];
  dyn[threadIdx.x] = 7;
  __syncthreads();
  if (threadIdx.x == 0 && out) out[0] = dyn[index];
}

// Recurses `depth` times with 1 KiB of locals per level: past the 32 KiB fiber stack.
__device__ __noinline__ int deep(int depth, volatile int* sink) {
  volatile int locals[256];
  locals[depth % 256] = depth;
  sink[0] = locals[depth % 256];
  return depth == 0 ? 0 : deep(depth - 1, sink) + locals[0];
}

__global__ void stack_kernel(int depth, int* out) {
  out[threadIdx.x] = deep(depth, out);
}

__global__ void load16_kernel(const unsigned char* in, unsigned char* out) {
  *reinterpret_cast<uint4*>(out) = *reinterpret_cast<const uint4*>(in);
}

}  // namespace

extern "C" {
GK_EMU_API int selftest_wmma(int a_col, int b_col, const __half* a, int lda, const __half* b, int ldb, const float* c,
                             int ldc, float* d, int ldd, int d_col) {
  if (!a_col && !b_col) wmma_kernel<wmma::row_major, wmma::row_major><<<1, 32>>>(a, lda, b, ldb, c, ldc, d, ldd, d_col);
  if (!a_col && b_col) wmma_kernel<wmma::row_major, wmma::col_major><<<1, 32>>>(a, lda, b, ldb, c, ldc, d, ldd, d_col);
  if (a_col && !b_col) wmma_kernel<wmma::col_major, wmma::row_major><<<1, 32>>>(a, lda, b, ldb, c, ldc, d, ldd, d_col);
  if (a_col && b_col) wmma_kernel<wmma::col_major, wmma::col_major><<<1, 32>>>(a, lda, b, ldb, c, ldc, d, ldd, d_col);
  return cudaGetLastError();
}
GK_EMU_API int selftest_neighbour(int* out, int threads, int with_barrier) {
  neighbour_kernel<<<1, threads>>>(out, with_barrier != 0);
  return cudaGetLastError();
}
GK_EMU_API int selftest_divergent(int which, int* out) {
  switch (which) {
    case 0: barrier_in_branch_kernel<<<1, 64>>>(out); break;
    case 1: two_barriers_kernel<<<1, 64>>>(out); break;
    case 2: divergent_shuffle_kernel<<<1, 64>>>(out); break;
    case 3: deadlock_kernel<<<1, 64>>>(out); break;
  }
  return cudaGetLastError();
}
GK_EMU_API int selftest_shuffle(const float* in, float* out) {
  shuffle_kernel<<<1, 64>>>(in, out);
  return cudaGetLastError();
}
GK_EMU_API int selftest_read(const float* in, int64_t index, float* out) {
  read_kernel<<<2, 32>>>(in, index, out);
  return cudaGetLastError();
}
GK_EMU_API int selftest_smem_read(int64_t smem, int64_t index, unsigned char* out) {
  smem_read_kernel<<<1, 32, smem>>>(index, out);
  return cudaGetLastError();
}
GK_EMU_API int selftest_load16(const unsigned char* in, unsigned char* out) {
  load16_kernel<<<1, 32>>>(in, out);
  return cudaGetLastError();
}
GK_EMU_API int selftest_stack(int depth, int* out) {
  stack_kernel<<<1, 32>>>(depth, out);
  return cudaGetLastError();
}
GK_EMU_API int selftest_big_smem(int set_attribute) {
  if (set_attribute) cudaFuncSetAttribute(smem_read_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 100000);
  smem_read_kernel<<<1, 32, 100000>>>(0, nullptr);
  return cudaGetLastError();
}
}
