// CUDA launcher of bias_gelu: checks, output and workspace allocation, and the call into the
// torch-free kernels of bias_gelu.cu (whose header describes them). Registered for the CUDA
// dispatch key.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../bias_gelu.h"
#include "bias_gelu_cuda.h"
#include "common_cuda.h"

namespace gpt_kernels {
namespace {

// x (rows, n) and bias (n,), contiguous; the outputs are the caller's to fill in.
BiasGeluParams make_params(const at::Tensor& x, const at::Tensor& bias, bool tanh) {
  BiasGeluParams p{};
  p.x = x.data_ptr();
  p.bias = bias.data_ptr();
  p.n = x.size(-1);
  p.rows = x.numel() / p.n;
  p.dtype = dtype_code(x.scalar_type(), "bias_gelu");
  p.approximate = tanh ? 1 : 0;
  return p;
}

at::Tensor bias_gelu_cuda_op(const at::Tensor& x_in, const at::Tensor& bias_in,
                             c10::string_view approximate) {
  check_bias_gelu_inputs(x_in, bias_in, "bias_gelu");
  const bool tanh = gelu_is_tanh(approximate, "bias_gelu");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), bias = bias_in.contiguous();
  auto out = at::empty(x.sizes(), x.options());
  if (x.numel() == 0) return out;
  BiasGeluParams p = make_params(x, bias, tanh);
  p.out = out.data_ptr();
  check_launch(bias_gelu_forward_cuda(p, c10::cuda::getCurrentCUDAStream()), "bias_gelu forward");
  return out;
}

std::tuple<at::Tensor, at::Tensor> bias_gelu_backward_cuda_op(const at::Tensor& grad_in,
                                                             const at::Tensor& x_in,
                                                             const at::Tensor& bias_in,
                                                             c10::string_view approximate) {
  check_bias_gelu_backward_inputs(grad_in, x_in, bias_in);
  const bool tanh = gelu_is_tanh(approximate, "bias_gelu_backward");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor grad = grad_in.contiguous(), x = x_in.contiguous(), bias = bias_in.contiguous();
  auto grad_x = at::empty(x.sizes(), x.options());
  if (x.numel() == 0) return {grad_x, at::zeros_like(bias, at::MemoryFormat::Contiguous)};
  auto grad_bias = at::empty(bias.sizes(), bias.options());
  BiasGeluParams p = make_params(x, bias, tanh);
  p.grad_out = grad.data_ptr();
  p.out = grad_x.data_ptr();
  p.grad_bias = grad_bias.data_ptr();
  const int64_t blocks = (p.rows + kBiasGeluRowBlock - 1) / kBiasGeluRowBlock;
  auto partial = at::empty({blocks, p.n}, x.options().dtype(acc_dtype(x.scalar_type())));
  p.partial = partial.data_ptr();
  check_launch(bias_gelu_backward_cuda(p, c10::cuda::getCurrentCUDAStream()), "bias_gelu backward");
  return {grad_x, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(gpt_kernels, CUDA, m) {
  m.impl("bias_gelu", &bias_gelu_cuda_op);
  m.impl("bias_gelu_backward", &bias_gelu_backward_cuda_op);
}

}  // namespace gpt_kernels
