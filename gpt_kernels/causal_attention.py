"""Python half of the fused causal attention op: autograd formula and fake (meta) kernels.

    out = torch.ops.gpt_kernels.causal_attention(q, k, v, dropout_p=0.1)   # (B, H, T, D)
    y = torch.ops.gpt_kernels.causal_attention_qkv(qkv, n_head, 0.1)        # (B, T, 3C) -> (B, T, C)

causal_attention (composite, csrc/causal_attention.cpp) calls causal_attention_forward, which
returns (out, lse, rng_state): the per-row log-sum-exp (B, H, T) fp32 (fp64 for fp64
inputs) and the (seed, offset) of the dropout mask as an int64[2] CPU tensor. The backward hands both to
causal_attention_backward, which recomputes the probabilities and regenerates the same mask,
so nothing of size (T, T) is stored. The seed is drawn inside the forward kernel from PyTorch's
generator of q's device (CPU: a fresh 64-bit seed; CUDA: the Philox (seed, offset) of the CUDA
generator), so torch.manual_seed governs the mask, also under torch.compile.

Autocast: on CUDA inside torch.autocast, floating q, k, v are cast to bfloat16 whatever the
autocast dtype (the CUDA kernels take bf16 and fp16; fp16 is used when called outside
autocast); a model whose q, k, v come from bf16-autocast Linear layers passes bf16 already.
On the CPU the kernel takes fp32 (and fp64).
"""
import torch

from . import _C  # noqa: F401  (the schemas and kernels)
from ._registration import refuse_double_backward

_lib = "gpt_kernels::"

# What the kernels take (csrc/causal_attention.h, csrc/causal_attention.cpp,
# csrc/cuda/causal_attention.cpp); tests/test_causal_attention.py holds them to the kernels.
HEAD_SIZES = (32, 64, 128)  # D = embed_dim / n_head
DTYPES = {"cpu": (torch.float32, torch.float64),   # of q, k, v (qkv)
          "cuda": (torch.bfloat16, torch.float16)}  # under CUDA autocast float32 is cast to bf16


@torch.library.register_fake(_lib + "causal_attention_forward")
def _forward_fake(q, k, v, dropout_p, scale, seed=None):
    B, H, T, D = q.shape
    out = q.new_empty((B, H, T, D))
    lse = q.new_empty((B, H, T), dtype=torch.float64 if q.dtype == torch.float64 else torch.float32)
    rng_state = q.new_empty((2,), dtype=torch.int64, device="cpu")
    return out, lse, rng_state


@torch.library.register_fake(_lib + "causal_attention_backward")
def _backward_fake(grad_out, q, k, v, out, lse, rng_state, dropout_p, scale):
    shape = q.shape
    return q.new_empty(shape), q.new_empty(shape), q.new_empty(shape)


def _setup_context(ctx, inputs, output):
    q, k, v, dropout_p, scale, _seed = inputs
    out, lse, rng_state = output
    ctx.save_for_backward(q, k, v, out, lse, rng_state)
    ctx.dropout_p, ctx.scale = dropout_p, scale
    ctx.mark_non_differentiable(lse, rng_state)


def _backward(ctx, grad_out, _grad_lse, _grad_rng_state):
    q, k, v, out, lse, rng_state = ctx.saved_tensors
    dq, dk, dv = torch.ops.gpt_kernels.causal_attention_backward(
        grad_out, q, k, v, out, lse, rng_state, ctx.dropout_p, ctx.scale)
    return dq, dk, dv, None, None, None


torch.library.register_autograd(_lib + "causal_attention_forward", _backward,
                                setup_context=_setup_context)

if hasattr(torch.library, "register_autocast"):
    torch.library.register_autocast(_lib + "causal_attention_forward", "cuda", torch.bfloat16)


# causal_attention_qkv: qkv (B, T, 3C) in, (B, T, C) out; the same kernels and mask.

@torch.library.register_fake(_lib + "causal_attention_qkv_forward")
def _qkv_forward_fake(qkv, n_head, dropout_p, scale, seed=None):
    B, T, C3 = qkv.shape
    out = qkv.new_empty((B, T, C3 // 3))
    lse = qkv.new_empty((B, n_head, T), dtype=torch.float64 if qkv.dtype == torch.float64 else torch.float32)
    return out, lse, qkv.new_empty((2,), dtype=torch.int64, device="cpu")


@torch.library.register_fake(_lib + "causal_attention_qkv_backward")
def _qkv_backward_fake(grad_out, qkv, out, lse, rng_state, n_head, dropout_p, scale):
    return qkv.new_empty(qkv.shape)


def _qkv_setup_context(ctx, inputs, output):
    qkv, n_head, dropout_p, scale, _seed = inputs
    out, lse, rng_state = output
    ctx.save_for_backward(qkv, out, lse, rng_state)
    ctx.n_head, ctx.dropout_p, ctx.scale = n_head, dropout_p, scale
    ctx.mark_non_differentiable(lse, rng_state)


def _qkv_backward(ctx, grad_out, _grad_lse, _grad_rng_state):
    qkv, out, lse, rng_state = ctx.saved_tensors
    grad_qkv = torch.ops.gpt_kernels.causal_attention_qkv_backward(
        grad_out, qkv, out, lse, rng_state, ctx.n_head, ctx.dropout_p, ctx.scale)
    return grad_qkv, None, None, None, None


torch.library.register_autograd(_lib + "causal_attention_qkv_forward", _qkv_backward,
                                setup_context=_qkv_setup_context)

if hasattr(torch.library, "register_autocast"):
    torch.library.register_autocast(_lib + "causal_attention_qkv_forward", "cuda", torch.bfloat16)


refuse_double_backward("causal_attention", "causal_attention_backward", "causal_attention_qkv_backward")
