"""gpt_kernels: the compiled kernels of gpt-pretrain (fused cross-entropy, fused attention,
fused residual dropout, fused bias + GELU).

    import gpt_kernels
    loss = torch.ops.gpt_kernels.cross_entropy(logits, targets)

Build it with `pip install -e .` from the repository root (see README.md).
"""
import torch  # noqa: F401  (the compiled library links against torch's libraries)

try:
    from . import _C  # noqa: F401  (registers torch.ops.gpt_kernels.* and their CPU/CUDA kernels)
except ImportError as e:
    import os as _os
    _why = _os.path.join(_os.path.dirname(__file__), "_build_error.txt")
    if _os.path.exists(_why):  # written by setup.py when the build failed and the install went on
        with open(_why) as _f:
            raise ImportError(f"gpt_kernels was not built: {_f.read().strip()}; fix that and "
                              "reinstall with `pip install -e .`") from None
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
