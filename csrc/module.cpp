// gpt_kernels._C: the compiled half of the gpt_kernels package.
//
// Importing it runs the static registrations below (op schemas) and in the other files of
// csrc/ (CPU kernels) and csrc/cuda/ (CUDA kernels), which makes torch.ops.gpt_kernels.* exist.
// It is a plain Python module with no functions: everything is reached through torch.ops,
// so no pybind11 is needed and the file compiles fast.
#include <Python.h>
#include <torch/library.h>

#include <string>

// The instruction sets the CPU kernels were compiled for (-march): gpt_kernels._C.SIMD, e.g.
// "avx512f avx2 fma" or "" for the scalar paths. tests/test_simd_paths.py checks each build.
constexpr const char* kSimd = ""
#if defined(__AVX512F__)
    "avx512f "
#endif
#if defined(__AVX2__)
    "avx2 "
#endif
#if defined(__FMA__)
    "fma "
#endif
#if defined(__ARM_NEON)
    "neon "
#endif
    ;

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  PyObject* module = PyModule_Create(&module_def);
  if (module != nullptr) {
    std::string simd(kSimd);
    if (!simd.empty()) simd.pop_back();  // the trailing space
    PyModule_AddStringConstant(module, "SIMD", simd.c_str());
  }
  return module;
}
}

// Every op of the library is declared here, once, with its schema; each backend registers its
// kernel in its own file (TORCH_LIBRARY_IMPL(gpt_kernels, CPU|CUDA, m)), and the Python files
// of gpt_kernels/ register autograd and fake (meta) implementations.
TORCH_LIBRARY(gpt_kernels, m) {
  // Fused cross-entropy (csrc/cross_entropy.cpp, csrc/cuda/cross_entropy.cu): the public op,
  // a composite that runs the fused forward when logits need a gradient and the loss-only
  // forward otherwise; its autograd lives on cross_entropy_fwd (gpt_kernels/cross_entropy.py).
  m.def("cross_entropy(Tensor logits, Tensor targets, int ignore_index=-100, "
        "str reduction=\"mean\") -> Tensor");
  // loss (float32 for 16-bit logits), and (compute_grad) d loss / d logits for an upstream
  // gradient of 1, in one pass
  m.def("cross_entropy_fwd(Tensor logits, Tensor targets, int ignore_index, str reduction, "
        "bool compute_grad) -> (Tensor loss, Tensor grad)");
  // the same, with the gradient written over the logits (the caller's logits are dead)
  m.def("cross_entropy_fwd_inplace(Tensor(a!) logits, Tensor targets, int ignore_index, "
        "str reduction) -> Tensor");
  // backward: grad *= upstream gradient (per row for "none"), skipped where it is 1
  m.def("cross_entropy_scale_grad_(Tensor(a!) grad, Tensor grad_loss, Tensor targets, "
        "int ignore_index, str reduction) -> ()");
  // backward for 16-bit logits: grad = upstream * d loss / d logits recomputed from the logits
  // and rounded once (rows whose factor is exactly 1 keep the forward's gradient)
  m.def("cross_entropy_regrad_(Tensor(a!) grad, Tensor logits, Tensor grad_loss, Tensor targets, "
        "int ignore_index, str reduction) -> ()");

  // Causal attention (csrc/causal_attention.cpp, csrc/cuda/causal_attention.*, gpt_kernels/causal_attention.py).
  // The public op; composite: draws nothing itself, calls causal_attention_forward, whose
  // autograd formula (attention.py) calls causal_attention_backward.
  m.def("causal_attention(Tensor q, Tensor k, Tensor v, float dropout_p=0.0, float? scale=None) -> Tensor");
  // out (B,H,T,D), lse (B,H,T) fp32 (fp64 for fp64 q), rng_state int64[2] = (seed, offset) on the CPU. seed=None
  // draws the seed from PyTorch's generator of q's device (so torch.manual_seed governs it).
  m.def("causal_attention_forward(Tensor q, Tensor k, Tensor v, float dropout_p, float scale, int? seed=None) -> (Tensor out, Tensor lse, Tensor rng_state)",
        {at::Tag::nondeterministic_seeded});
  m.def("causal_attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor rng_state, float dropout_p, float scale) -> (Tensor grad_q, Tensor grad_k, Tensor grad_v)");
  // The same attention read from qkv (B, T, 3C) = [q | k | v] (nn.Linear(C, 3C)'s output) and
  // written as (B, T, C): on the CPU with no transposing copies and no concatenated gradient.
  // out = causal_attention(q, k, v) with q, k, v = qkv.split(C, 2) viewed as (B, H, T, D),
  // transposed back to (B, T, C); the same mask for the same seed.
  m.def("causal_attention_qkv(Tensor qkv, int n_head, float dropout_p=0.0, float? scale=None) -> Tensor");
  m.def("causal_attention_qkv_forward(Tensor qkv, int n_head, float dropout_p, float scale, int? seed=None) -> (Tensor out, Tensor lse, Tensor rng_state)",
        {at::Tag::nondeterministic_seeded});
  m.def("causal_attention_qkv_backward(Tensor grad_out, Tensor qkv, Tensor out, Tensor lse, Tensor rng_state, int n_head, float dropout_p, float scale) -> Tensor grad_qkv");
  // Debug/test: the (B,H,T,T) bool keep-mask the kernels apply for rng_state (CPU).
  m.def("causal_attention_dropout_mask(int B, int H, int T, float dropout_p, Tensor rng_state) -> Tensor");

  // Residual dropout, out = residual + dropout(x, p) (csrc/dropout_add.cpp, csrc/cuda/dropout_add.*,
  // gpt_kernels/dropout_add.py). The public op; composite, calls dropout_add_forward, whose autograd
  // formula calls dropout_add_backward. residual=None gives dropout(x).
  m.def("dropout_add(Tensor x, Tensor? residual, float p) -> Tensor");
  // out (residual's dtype, else x's), rng_state int64[2] = (seed, offset) on the CPU; seed as in
  // causal_attention_forward.
  m.def("dropout_add_forward(Tensor x, Tensor? residual, float p, int? seed=None) -> (Tensor out, Tensor rng_state)",
        {at::Tag::nondeterministic_seeded});
  // grad_x = grad_out * mask / (1 - p), the mask regenerated from rng_state, in x's dtype.
  m.def("dropout_add_backward(Tensor grad_out, Tensor rng_state, float p, ScalarType grad_x_dtype) -> Tensor");
  // Debug/test: the (numel,) bool keep-mask dropout_add applies for rng_state (CPU).
  m.def("dropout_add_mask(int numel, float p, Tensor rng_state) -> Tensor");

  // Fused bias + GELU, out = gelu(x + bias), bias along x's last dimension; approximate as in
  // F.gelu: "none" the exact (erf) GELU, "tanh" its tanh approximation (GPT-2's)
  // (csrc/bias_gelu.cpp, csrc/cuda/bias_gelu.*, gpt_kernels/bias_gelu.py, which registers the
  // autograd formula).
  m.def("bias_gelu(Tensor x, Tensor bias, str approximate=\"none\") -> Tensor");
  // grad_x = grad_out * gelu'(x + bias), grad_bias = grad_x summed over all but the last dimension.
  m.def("bias_gelu_backward(Tensor grad_out, Tensor x, Tensor bias, str approximate=\"none\") -> "
        "(Tensor grad_x, Tensor grad_bias)");
}
