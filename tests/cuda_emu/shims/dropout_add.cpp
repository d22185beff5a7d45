// C entry points for the emulated dropout_add kernels: DropoutAddParams filled as
// csrc/cuda/dropout_add_launcher.cpp's make_params does (threshold, keep scale from p).
#include "../philox_dropout.h"
#include "dropout_add_cuda.h"

using namespace gpt_kernels;

extern "C" {
GK_EMU_API int emu_dropout_add(int backward, const void* src, const void* residual, void* dst, int64_t n,
                               int src_dtype, int dst_dtype, double p, uint64_t seed, uint64_t offset) {
  DropoutAddParams q{};
  q.dropout = p > 0;
  q.threshold = dropout_threshold(static_cast<float>(p));
  q.keep_scale = 1.0 / (1.0 - p);
  q.seed = seed;
  q.offset = offset;
  q.src = src;
  q.residual = residual;
  q.dst = dst;
  q.n = n;
  q.src_dtype = src_dtype;
  q.dst_dtype = dst_dtype;
  return backward ? dropout_add_backward_cuda(q, nullptr) : dropout_add_forward_cuda(q, nullptr);
}
}
