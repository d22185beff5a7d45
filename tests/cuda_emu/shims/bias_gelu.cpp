// C entry points for the emulated bias_gelu kernels: BiasGeluParams filled as
// csrc/cuda/bias_gelu_launcher.cpp does.
#include "bias_gelu_cuda.h"

using namespace gpt_kernels;

extern "C" {
GK_EMU_API int emu_bias_gelu(int backward, const void* x, const void* bias, const void* grad_out, void* out,
                             void* grad_bias, void* partial, int64_t rows, int64_t n, int dtype, int approximate) {
  BiasGeluParams p{};
  p.x = x;
  p.bias = bias;
  p.grad_out = grad_out;
  p.out = out;
  p.grad_bias = grad_bias;
  p.partial = partial;
  p.rows = rows;
  p.n = n;
  p.dtype = dtype;
  p.approximate = approximate;  // 0: the exact (erf) GELU, 1: tanh
  return backward ? bias_gelu_backward_cuda(p, nullptr) : bias_gelu_forward_cuda(p, nullptr);
}
GK_EMU_API int emu_bias_gelu_row_block() { return kBiasGeluRowBlock; }
}
