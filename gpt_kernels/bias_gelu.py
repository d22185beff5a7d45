"""Python half of the fused bias + GELU op: autograd formula, fake (meta) kernels, autocast rule.

    h = torch.ops.gpt_kernels.bias_gelu(x @ fc.weight.T, fc.bias)   # == F.gelu(fc(x))
    h = torch.ops.gpt_kernels.bias_gelu(x @ fc.weight.T, fc.bias, "tanh")
                                                # == F.gelu(fc(x), approximate="tanh"), GPT-2's

The forward saves x (the bias-free matmul's output) and the bias, as torch's Linear + GELU saves
the pre-activation; the backward (bias_gelu_backward) recomputes gelu'(x + bias) from them and
returns grad_x and grad_bias, the bias gradient summed in the same pass over the rows. Both take
approximate="none" (the exact erf GELU, the default) or "tanh", as F.gelu does.

dtypes: x and bias must share one; the op registers no autocast rule (a fixed cast would turn
float16 into bfloat16). Under autocast the caller casts the bias to the matmul's output dtype,
as F.linear does with its own bias: bias_gelu(h, fc.bias.to(h.dtype)); the bias's gradient flows
back to the float32 parameter through that cast.
"""
import torch

from . import _C  # noqa: F401  (the schemas and kernels)
from ._registration import refuse_double_backward

_lib = "gpt_kernels::"

# The dtypes of x (and bias: the same) the kernels take on each device (csrc/bias_gelu.cpp,
# csrc/cuda/bias_gelu_launcher.cpp), and the forms of GELU (csrc/bias_gelu.h).
DTYPES = {device: (torch.float32, torch.bfloat16, torch.float16, torch.float64) for device in ("cpu", "cuda")}
APPROXIMATE = ("none", "tanh")


@torch.library.register_fake(_lib + "bias_gelu")
def _forward_fake(x, bias, approximate="none"):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.register_fake(_lib + "bias_gelu_backward")
def _backward_fake(grad_out, x, bias, approximate="none"):
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            torch.empty_like(bias, memory_format=torch.contiguous_format))


def _setup_context(ctx, inputs, output):
    x, bias, approximate = inputs  # torch fills in the default approximate="none"
    ctx.save_for_backward(x, bias)
    ctx.approximate = approximate


def _backward(ctx, grad_out):
    x, bias = ctx.saved_tensors
    if not (ctx.needs_input_grad[0] or ctx.needs_input_grad[1]):
        return None, None, None
    grad_x, grad_bias = torch.ops.gpt_kernels.bias_gelu_backward(grad_out, x, bias, ctx.approximate)
    return (grad_x if ctx.needs_input_grad[0] else None,
            grad_bias if ctx.needs_input_grad[1] else None, None)


torch.library.register_autograd(_lib + "bias_gelu", _backward, setup_context=_setup_context)
refuse_double_backward("bias_gelu", "bias_gelu_backward")
