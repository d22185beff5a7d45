"""Python half of the fused residual dropout op: autograd formula and fake (meta) kernels.

    x = torch.ops.gpt_kernels.dropout_add(branch, x, p)      # x + dropout(branch, p)
    x = torch.ops.gpt_kernels.dropout_add(emb, None, p)      # dropout(emb, p)

dropout_add (composite, csrc/dropout_add.cpp) calls dropout_add_forward, which returns
(out, rng_state): the (seed, offset) of the mask as an int64[2] CPU tensor, drawn from
PyTorch's generator of x's device (so torch.manual_seed governs it). The backward regenerates
the mask from it (dropout_add_backward), so no mask tensor is stored: the saved state of one
call is 16 bytes instead of a mask the size of x. The residual's gradient is grad_out itself.
"""
import torch

from . import _C  # noqa: F401  (the schemas and kernels)
from ._registration import refuse_double_backward

_lib = "gpt_kernels::"

# The dtypes of x the kernels take on each device (csrc/dropout_add.cpp, csrc/cuda/dropout_add_launcher.cpp);
# residual has x's dtype, or float32 with a bfloat16/float16 x (csrc/dropout_add.h).
DTYPES = {device: (torch.float32, torch.bfloat16, torch.float16, torch.float64) for device in ("cpu", "cuda")}


@torch.library.register_fake(_lib + "dropout_add_forward")
def _forward_fake(x, residual, p, seed=None):
    out = torch.empty_like(x if residual is None else residual, memory_format=torch.contiguous_format)
    return out, x.new_empty((2,), dtype=torch.int64, device="cpu")


@torch.library.register_fake(_lib + "dropout_add_backward")
def _backward_fake(grad_out, rng_state, p, grad_x_dtype):
    return torch.empty_like(grad_out, dtype=grad_x_dtype, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    x, residual, p, _seed = inputs
    _out, rng_state = output
    ctx.save_for_backward(rng_state)
    ctx.p, ctx.x_dtype, ctx.has_residual = p, x.dtype, residual is not None
    ctx.mark_non_differentiable(rng_state)


def _backward(ctx, grad_out, _grad_rng_state):
    (rng_state,) = ctx.saved_tensors
    grad_x = None
    if ctx.needs_input_grad[0]:
        grad_x = torch.ops.gpt_kernels.dropout_add_backward(grad_out, rng_state, ctx.p, ctx.x_dtype)
    grad_residual = grad_out if ctx.has_residual and ctx.needs_input_grad[1] else None
    return grad_x, grad_residual, None, None


torch.library.register_autograd(_lib + "dropout_add_forward", _backward, setup_context=_setup_context)
refuse_double_backward("dropout_add", "dropout_add_backward")
