// CUDA launcher of causal attention: checks, output allocation, the dropout seed from the CUDA
// generator, and the call into the torch-free kernels of causal_attention.cu (the file
// header there describes the algorithm). Registered for the CUDA dispatch key.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "../causal_attention.h"
#include "../philox_dropout.h"
#include "causal_attention_cuda.h"
#include "common_cuda.h"

namespace gpt_kernels {
namespace {

// The kernels read 16-byte chunks of each row: every (b, h, t) row must start 16-byte aligned.
at::Tensor aligned_rows(const at::Tensor& t) {
  at::Tensor x = last_dim_contiguous(t);
  const bool aligned = aligned16(x) &&
                       x.stride(0) % 8 == 0 && x.stride(1) % 8 == 0 && x.stride(2) % 8 == 0;
  // not x.contiguous(): that returns x itself when x is contiguous but its storage offset is
  // not a multiple of 8 elements (buf[1:].view(B, H, T, D)), and the 16-byte loads would fault
  return aligned ? x : x.clone(at::MemoryFormat::Contiguous);  // a fresh, aligned allocation
}

void set_strides(int64_t* dst, const at::Tensor& t) {
  for (int d = 0; d < 3; ++d) dst[d] = t.stride(d);
}

// What the CUDA kernels take beyond the shared checks: 16-bit inputs, and B, H within the grid.
void check_cuda_inputs(const at::Tensor& q) {
  TORCH_CHECK(q.scalar_type() == at::kBFloat16 || q.scalar_type() == at::kHalf,
              "causal_attention: on CUDA q, k, v must be bfloat16 or float16, got ", q.scalar_type(),
              " (under torch.autocast float32 inputs are cast to bfloat16)");
  TORCH_CHECK(q.size(0) <= 65535 && q.size(1) <= 65535,
              "causal_attention: on CUDA B and H must be at most 65535");
}

// The kernels' shared memory must fit the GPU: a clear message instead of "invalid argument"
// from the launch (D = 128 needs 110-121 KiB; consumer Ampere/Ada/Blackwell allow 99 KiB).
void check_shared_memory(const at::Tensor& q, bool backward) {
  int limit = 0;
  const cudaError_t err = cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                                 q.get_device());
  TORCH_CHECK(err == cudaSuccess, "causal_attention: cannot query the GPU's shared memory: ",
              cudaGetErrorString(err));
  const size_t need = causal_attention_smem_bytes(static_cast<int>(q.size(3)), backward);
  TORCH_CHECK(need <= static_cast<size_t>(limit), "causal_attention: head size D = ", q.size(3),
              " needs ", need, " bytes of shared memory per block in the ",
              backward ? "backward" : "forward", " kernel, but this GPU allows ", limit,
              ". Use a head size of 64 or less (embed_dim / n_head), or --kernels torch.");
}

AttentionParams make_params(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            double dropout_p, double scale, uint64_t seed, uint64_t offset) {
  AttentionParams p{};
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  set_strides(p.q_stride, q);
  set_strides(p.k_stride, k);
  set_strides(p.v_stride, v);
  p.B = static_cast<int>(q.size(0));
  p.H = static_cast<int>(q.size(1));
  p.T = static_cast<int>(q.size(2));
  p.D = static_cast<int>(q.size(3));
  p.scale = static_cast<float>(scale);
  p.dropout = dropout_p > 0;
  p.keep_scale = static_cast<float>(1.0 / (1.0 - dropout_p));
  p.threshold = dropout_threshold(static_cast<float>(dropout_p));
  p.seed = seed;
  p.offset = offset;
  return p;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> causal_attention_forward_cuda_op(
    const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in, double dropout_p,
    double scale, std::optional<int64_t> seed_arg) {
  check_attention_inputs(q_in, k_in, v_in, dropout_p, "causal_attention_forward");
  check_cuda_inputs(q_in);
  const c10::cuda::CUDAGuard guard(q_in.device());
  check_shared_memory(q_in, /*backward=*/false);
  const at::Tensor q = aligned_rows(q_in), k = aligned_rows(k_in), v = aligned_rows(v_in);
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
  auto out = at::empty({B, H, T, D}, q.options());
  auto lse = at::empty({B, H, T}, q.options().dtype(at::kFloat));
  const auto [seed, offset, rng_state] =
      dropout_seed(dropout_p, seed_arg, [&] { return cuda_philox_seed(q.device()); });
  if (B * H * T == 0) return {out, lse, rng_state};
  AttentionParams p = make_params(q, k, v, dropout_p, scale, seed, offset);
  p.out = out.data_ptr();
  p.lse = lse.data_ptr<float>();
  check_launch(causal_attention_forward_cuda(p, q.scalar_type() == at::kBFloat16,
                                             c10::cuda::getCurrentCUDAStream()),
               "causal_attention forward");
  return {out, lse, rng_state};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> causal_attention_backward_cuda_op(
    const at::Tensor& dout_in, const at::Tensor& q_in, const at::Tensor& k_in,
    const at::Tensor& v_in, const at::Tensor& out_in, const at::Tensor& lse_in,
    const at::Tensor& rng_state, double dropout_p, double scale) {
  check_backward_inputs(dout_in, q_in, k_in, v_in, out_in, lse_in, rng_state, dropout_p);
  check_cuda_inputs(q_in);
  const c10::cuda::CUDAGuard guard(q_in.device());
  check_shared_memory(q_in, /*backward=*/true);
  const at::Tensor q = aligned_rows(q_in), k = aligned_rows(k_in), v = aligned_rows(v_in),
                   dout = aligned_rows(dout_in), out = out_in.contiguous(),
                   lse = lse_in.contiguous();
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
  auto dq = at::empty({B, H, T, D}, q.options());
  auto dk = at::empty({B, H, T, D}, q.options());
  auto dv = at::empty({B, H, T, D}, q.options());
  if (B * H * T == 0) return {dq, dk, dv};
  auto dq_accum = at::zeros({B, H, T, D}, q.options().dtype(at::kFloat));
  auto delta = at::empty({B, H, T}, q.options().dtype(at::kFloat));
  const auto [seed, offset] = read_rng_state(rng_state, "causal_attention");
  AttentionParams p = make_params(q, k, v, dropout_p, scale, seed, offset);
  p.out = const_cast<void*>(out.data_ptr());
  p.lse = const_cast<float*>(lse.data_ptr<float>());
  p.dout = dout.data_ptr();
  set_strides(p.do_stride, dout);
  p.delta = delta.data_ptr<float>();
  p.dq_accum = dq_accum.data_ptr<float>();
  p.dq = dq.data_ptr();
  p.dk = dk.data_ptr();
  p.dv = dv.data_ptr();
  check_launch(causal_attention_backward_cuda(p, q.scalar_type() == at::kBFloat16,
                                             c10::cuda::getCurrentCUDAStream()),
               "causal_attention backward");
  return {dq, dk, dv};
}

// causal_attention_qkv on CUDA: the same kernels on (B, H, T, D) views of qkv (strided reads,
// no copy), then the copies the CPU path avoids: out transposed to (B, T, C), and dq, dk, dv
// concatenated into the (B, T, 3C) gradient. (Writing them in place needs output strides in
// the kernels: left for a session with a GPU to measure it.)
std::tuple<at::Tensor, at::Tensor, at::Tensor> causal_attention_qkv_forward_cuda_op(
    const at::Tensor& qkv_in, int64_t n_head, double dropout_p, double scale,
    std::optional<int64_t> seed_arg) {
  check_qkv_inputs(qkv_in, n_head, dropout_p, "causal_attention_qkv_forward");
  const at::Tensor qkv = qkv_in.contiguous();
  const auto [q, k, v] = qkv_heads(qkv, n_head);
  auto [out, lse, rng_state] = causal_attention_forward_cuda_op(q, k, v, dropout_p, scale, seed_arg);
  auto out_btc = out.transpose(1, 2).reshape({qkv.size(0), qkv.size(1), qkv.size(2) / 3});
  return {out_btc, lse, rng_state};
}

at::Tensor causal_attention_qkv_backward_cuda_op(const at::Tensor& dout_in, const at::Tensor& qkv_in,
                                                 const at::Tensor& out_in, const at::Tensor& lse,
                                                 const at::Tensor& rng_state, int64_t n_head,
                                                 double dropout_p, double scale) {
  check_qkv_backward_inputs(dout_in, qkv_in, out_in, lse, rng_state, n_head, dropout_p);
  const at::Tensor qkv = qkv_in.contiguous();
  const auto [q, k, v] = qkv_heads(qkv, n_head);
  auto [dq, dk, dv] = causal_attention_backward_cuda_op(
      heads_view(dout_in.contiguous(), n_head), q, k, v, heads_view(out_in.contiguous(), n_head),
      lse, rng_state, dropout_p, scale);
  const std::vector<int64_t> shape = {qkv.size(0), qkv.size(1), qkv.size(2) / 3};
  return at::cat({dq.transpose(1, 2).reshape(shape), dk.transpose(1, 2).reshape(shape),
                  dv.transpose(1, 2).reshape(shape)}, 2);
}

}  // namespace

TORCH_LIBRARY_IMPL(gpt_kernels, CUDA, m) {
  m.impl("causal_attention_forward", &causal_attention_forward_cuda_op);
  m.impl("causal_attention_backward", &causal_attention_backward_cuda_op);
  m.impl("causal_attention_qkv_forward", &causal_attention_qkv_forward_cuda_op);
  m.impl("causal_attention_qkv_backward", &causal_attention_qkv_backward_cuda_op);
}

}  // namespace gpt_kernels
