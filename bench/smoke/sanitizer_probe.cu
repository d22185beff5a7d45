// A tiny CUDA program that tells bench/gpu_env.py what works on a GPU machine, in seconds:
//   probe ok     a correct kernel: nvcc's output runs on this GPU (and, under compute-sanitizer,
//                the tool takes the device: on gVisor it refuses it)
//   probe oob    writes one element past the end of its buffer: memcheck must report it
//   probe race   reads shared memory another warp writes, with no barrier: racecheck must report it
// Run "oob" and "race" only under compute-sanitizer: plain, they are bugs.
#include <cstdio>
#include <cstring>
#include <cuda_runtime.h>

__global__ void fill(float* out, int n, int extra) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n + extra) out[i] = 1.0f;  // extra = 1: one write past the end
}

__global__ void shared_race(int* out) {
  __shared__ int s[64];
  s[threadIdx.x] = threadIdx.x;
  // a __syncthreads() belongs here: thread 31 reads what thread 32 (the next warp) writes
  out[threadIdx.x] = s[(threadIdx.x + 1) % blockDim.x];
}

static int check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    std::printf("probe: %s failed: %s\n", what, cudaGetErrorString(err));
    return 1;
  }
  return 0;
}

int main(int argc, char** argv) {
  const char* mode = argc > 1 ? argv[1] : "ok";
  const int n = 1000;
  float* buf = nullptr;
  int* ints = nullptr;
  if (check(cudaMalloc(&buf, n * sizeof(float)), "cudaMalloc")) return 1;
  if (check(cudaMalloc(&ints, 64 * sizeof(int)), "cudaMalloc")) return 1;
  if (std::strcmp(mode, "race") == 0) {
    shared_race<<<1, 64>>>(ints);
  } else {
    fill<<<(n + 255) / 256, 256>>>(buf, n, std::strcmp(mode, "oob") == 0 ? 1 : 0);
  }
  if (check(cudaGetLastError(), "kernel launch") || check(cudaDeviceSynchronize(), "kernel")) return 1;
  float last = 0.0f;
  if (check(cudaMemcpy(&last, buf + n - 1, sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy")) return 1;
  cudaFree(buf);
  cudaFree(ints);
  std::printf("probe %s: kernel ran (%s)\n", mode, last == 1.0f || std::strcmp(mode, "race") == 0 ? "ok" : "WRONG RESULT");
  return last == 1.0f || std::strcmp(mode, "race") == 0 ? 0 : 1;
}
