// C entry points for the emulated causal-attention kernels: AttentionParams filled as
// csrc/cuda/causal_attention_launcher.cpp's make_params does (threshold, keep scale from p; strides in
// elements, per b, h, t).
#include "../philox_dropout.h"
#include "causal_attention_cuda.h"

using namespace gpt_kernels;

namespace {
AttentionParams make(const void* q, const void* k, const void* v, const int64_t* qs, const int64_t* ks,
                     const int64_t* vs, int B, int H, int T, int D, double dropout_p, double scale, uint64_t seed,
                     uint64_t offset) {
  AttentionParams p{};
  p.q = q;
  p.k = k;
  p.v = v;
  for (int d = 0; d < 3; ++d) {
    p.q_stride[d] = qs[d];
    p.k_stride[d] = ks[d];
    p.v_stride[d] = vs[d];
  }
  p.B = B;
  p.H = H;
  p.T = T;
  p.D = D;
  p.scale = static_cast<float>(scale);
  p.dropout = dropout_p > 0;
  p.keep_scale = static_cast<float>(1.0 / (1.0 - dropout_p));
  p.threshold = dropout_threshold(static_cast<float>(dropout_p));
  p.seed = seed;
  p.offset = offset;
  return p;
}
}  // namespace

extern "C" {
GK_EMU_API int emu_attention_forward(const void* q, const void* k, const void* v, const int64_t* qs,
                                     const int64_t* ks, const int64_t* vs, void* out, float* lse, int B, int H,
                                     int T, int D, double dropout_p, double scale, uint64_t seed, uint64_t offset,
                                     int bf16) {
  AttentionParams p = make(q, k, v, qs, ks, vs, B, H, T, D, dropout_p, scale, seed, offset);
  p.out = out;
  p.lse = lse;
  return causal_attention_forward_cuda(p, bf16 != 0, nullptr);
}

GK_EMU_API int emu_attention_backward(const void* dout, const int64_t* dos, const void* q, const void* k,
                                      const void* v, const int64_t* qs, const int64_t* ks, const int64_t* vs,
                                      const void* out, const float* lse, float* delta, float* dq_accum, void* dq,
                                      void* dk, void* dv, int B, int H, int T, int D, double dropout_p,
                                      double scale, uint64_t seed, uint64_t offset, int bf16) {
  AttentionParams p = make(q, k, v, qs, ks, vs, B, H, T, D, dropout_p, scale, seed, offset);
  p.out = const_cast<void*>(out);
  p.lse = const_cast<float*>(lse);
  p.dout = dout;
  for (int d = 0; d < 3; ++d) p.do_stride[d] = dos[d];
  p.delta = delta;
  p.dq_accum = dq_accum;
  p.dq = dq;
  p.dk = dk;
  p.dv = dv;
  return causal_attention_backward_cuda(p, bf16 != 0, nullptr);
}

GK_EMU_API size_t emu_attention_smem_bytes(int D, int backward) { return causal_attention_smem_bytes(D, backward != 0); }
}
