// CUDA launcher of dropout_add: checks, output allocation, the dropout seed from the CUDA
// generator, and the call into the torch-free kernels of dropout_add.cu (whose header
// describes them). Registered for the CUDA dispatch key.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>

#include "../dropout_add.h"
#include "../philox_dropout.h"
#include "common_cuda.h"
#include "dropout_add_cuda.h"

namespace gpt_kernels {
namespace {

DropoutAddParams make_params(double p, uint64_t seed, uint64_t offset) {
  DropoutAddParams params{};
  params.dropout = p > 0;
  params.threshold = dropout_threshold(static_cast<float>(p));
  params.keep_scale = 1.0 / (1.0 - p);
  params.seed = seed;
  params.offset = offset;
  return params;
}

std::tuple<at::Tensor, at::Tensor> dropout_add_forward_cuda_op(
    const at::Tensor& x_in, const std::optional<at::Tensor>& residual_in, double p,
    std::optional<int64_t> seed_arg) {
  check_dropout_add_forward(x_in, residual_in, p);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const std::optional<at::Tensor> residual = contiguous_or_none(residual_in);
  const auto out_dtype = residual.has_value() ? residual->scalar_type() : x.scalar_type();
  auto out = at::empty(x.sizes(), x.options().dtype(out_dtype));
  const auto [seed, offset, rng_state] =
      dropout_seed(p, seed_arg, [&] { return cuda_philox_seed(x.device()); });
  if (x.numel() == 0) return {out, rng_state};
  DropoutAddParams params = make_params(p, seed, offset);
  params.src = x.data_ptr();
  params.residual = residual.has_value() ? residual->data_ptr() : nullptr;
  params.dst = out.data_ptr();
  params.n = x.numel();
  params.src_dtype = dtype_code(x.scalar_type(), "dropout_add");
  params.dst_dtype = dtype_code(out_dtype, "dropout_add");
  check_launch(dropout_add_forward_cuda(params, c10::cuda::getCurrentCUDAStream()), "dropout_add forward");
  return {out, rng_state};
}

at::Tensor dropout_add_backward_cuda_op(const at::Tensor& grad_in, const at::Tensor& rng_state,
                                        double p, at::ScalarType grad_x_dtype) {
  check_dropout_add_backward(grad_in, rng_state, p, grad_x_dtype);
  const c10::cuda::CUDAGuard guard(grad_in.device());
  const at::Tensor grad = grad_in.contiguous();
  if (p == 0) return grad.to(grad_x_dtype, /*non_blocking=*/false, /*copy=*/true);
  auto grad_x = at::empty(grad.sizes(), grad.options().dtype(grad_x_dtype));
  if (grad.numel() == 0) return grad_x;
  const auto [seed, offset] = read_rng_state(rng_state, "dropout_add_backward");
  DropoutAddParams params = make_params(p, seed, offset);
  params.src = grad.data_ptr();
  params.dst = grad_x.data_ptr();
  params.n = grad.numel();
  params.src_dtype = dtype_code(grad.scalar_type(), "dropout_add");
  params.dst_dtype = dtype_code(grad_x_dtype, "dropout_add");
  check_launch(dropout_add_backward_cuda(params, c10::cuda::getCurrentCUDAStream()), "dropout_add backward");
  return grad_x;
}

}  // namespace

TORCH_LIBRARY_IMPL(gpt_kernels, CUDA, m) {
  m.impl("dropout_add_forward", &dropout_add_forward_cuda_op);
  m.impl("dropout_add_backward", &dropout_add_backward_cuda_op);
}

}  // namespace gpt_kernels
