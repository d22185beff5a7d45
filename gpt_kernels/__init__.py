"""gpt_kernels: the compiled kernels of gpt-pretrain (fused cross-entropy, fused attention,
fused residual dropout, fused bias + GELU).

    import gpt_kernels
    loss = torch.ops.gpt_kernels.cross_entropy(logits, targets)

Build it with `pip install -e .` from the repository root (see README.md).
"""
import torch  # noqa: F401  (the compiled library links against torch's libraries)

def _build_error():
    """The reason setup.py left when the kernels failed to build, or None."""
    import os
    path = os.path.join(os.path.dirname(__file__), "_build_error.txt")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return f.read().strip()


if _build_error() is not None:  # written by setup.py when the build failed and the install went on
    raise ImportError(f"gpt_kernels was not built: {_build_error()}; fix that and reinstall with "
                      "`pip install -e .`")
try:
    from . import _C  # noqa: F401  (registers torch.ops.gpt_kernels.* and their CPU/CUDA kernels)
except ImportError as e:
    raise ImportError(f"gpt_kernels' compiled library does not load ({e}); build it with "
                      "`pip install -e .` (or `python setup.py build_ext --inplace`)") from e
from . import cross_entropy as _cross_entropy  # autograd + fake registrations of the loss ops
from .cross_entropy import cross_entropy_inplace  # noqa: F401
from . import attention  # noqa: F401,E402  (autograd and fake kernels of causal_attention)
from . import dropout  # noqa: F401,E402  (autograd and fake kernels of dropout_add)
from . import gelu  # noqa: F401,E402  (autograd and fake kernels of bias_gelu)


def has_cuda_kernels() -> bool:
    """True when the library was compiled with its CUDA kernels."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("gpt_kernels::cross_entropy_fwd", "CUDA")
