"""Fused cross-entropy: autograd and fake (meta) registrations, and the in-place variant.

    loss = torch.ops.gpt_kernels.cross_entropy(logits, targets, ignore_index=-100, reduction="mean")
    loss = gpt_kernels.cross_entropy_inplace(logits, targets)   # logits are dead: grad overwrites them

logits (N, V) float32/bfloat16/float16 (float64 too, for gradcheck), targets (N,) int64. The same
loss and gradient as F.cross_entropy; the kernels are csrc/cross_entropy.cpp (CPU) and
csrc/cuda/cross_entropy.cu (CUDA), whose header comments give the algorithm.

How the ops fit together (schemas in csrc/module.cpp):
  cross_entropy              public op; a C++ composite that calls cross_entropy_fwd with
                             compute_grad = grad mode on and logits.requires_grad
  cross_entropy_fwd          (loss, grad): the fused kernel; grad is d loss / d logits for an
                             upstream gradient of 1 (empty when compute_grad is False).
                             Its autograd formula below saves grad and hands it back.
  cross_entropy_scale_grad_  the backward (float32, float64, bfloat16): grad *= upstream gradient
                             in place, per row for "none"; rows whose factor is exactly 1 are
                             skipped, so the usual loss.backward() of a mean loss costs nothing
                             (no device sync either: on CUDA each block reads its factor and
                             returns when it is 1).
  cross_entropy_regrad_      the float16 backward: rows whose factor is not exactly 1 are
                             recomputed from the logits in fp32 and rounded once, instead of
                             rescaling a gradient already rounded to float16 (which rounds twice,
                             and has lost (p - y) / N below 2^-24 before a GradScaler's factor
                             of 65536 could lift it). So the float16 path also saves the logits,
                             as F.cross_entropy saves its N x V log-softmax. bfloat16 has
                             float32's range, so nothing underflows there, and a power-of-two
                             factor (a GradScaler's, 1/2^k) rescales it exactly; any other
                             factor rounds it a second time (at most one more half-ulp).
  cross_entropy_fwd_inplace  the fused kernel writing grad over the logits (see below).

The loss is float32 for bfloat16/float16 logits (float64 for float64), as F.cross_entropy's is
under autocast, for every reduction.

Why a composite public op rather than register_autograd on cross_entropy itself: an autograd
formula registered on an op sees only the op's outputs, and the point of the fusion is that the
forward already made the gradient; so the public op returns the loss and delegates to
cross_entropy_fwd, whose outputs include the gradient to save. Under torch.compile the composite
is traced through, and opcheck passes on all four ops (tests/test_cross_entropy.py).

The backward rescales the saved gradient in place only when autograd will free the graph after
this backward (retain_graph=False, the training case); when the graph is kept (retain_graph=True,
gradcheck, torch.autograd.grad called twice) it scales a copy, so a second backward sees the
saved gradient unchanged.

The in-place option, cross_entropy_inplace (below): the same loss, with the gradient written over
the logits' buffer instead of a new N x V tensor, for callers whose logits are dead after the
loss. It bumps the logits' version counter, so another op that saved the logits makes backward
raise autograd's in-place error instead of using gradients as logits.

Bad targets on CUDA: the kernels never read outside a row; the launcher then synchronises once
to raise a clear error naming the first bad target. GPT_KERNELS_CHECK_TARGETS=0 skips that
synchronisation (a bad target then gives a nan loss), as does CUDA graph capture.
"""
import torch

_REDUCTIONS = ("mean", "sum", "none")
_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
# the dtypes of the logits the kernels take on each device (csrc/cross_entropy.h)
DTYPES = {"cpu": _DTYPES, "cuda": _DTYPES}


def _check(logits, targets, reduction):
    """The shape/dtype/device checks of csrc/cross_entropy.h, for fake tensors (torch.compile)."""
    torch._check(logits.dim() == 2, lambda: f"cross_entropy: logits must be 2-D (N, V), got shape {tuple(logits.shape)}")
    torch._check(targets.dim() == 1, lambda: f"cross_entropy: targets must be 1-D (N,), got shape {tuple(targets.shape)}")
    torch._check(targets.shape[0] == logits.shape[0], lambda: (
        f"cross_entropy: logits has N = {logits.shape[0]} rows but targets has {targets.shape[0]} entries"))
    torch._check(logits.shape[0] != 0, lambda: "cross_entropy: N = 0: logits and targets have no rows")
    torch._check(logits.shape[1] != 0, lambda: "cross_entropy: V = 0: logits have no classes")
    torch._check(targets.dtype == torch.int64, lambda: f"cross_entropy: targets must be int64 (torch.long), got {targets.dtype}")
    torch._check(logits.dtype in _DTYPES, lambda: f"cross_entropy: logits must be float32, bfloat16, float16 or float64, got {logits.dtype}")
    torch._check(logits.device == targets.device, lambda: (
        f"cross_entropy: logits are on {logits.device} but targets are on {targets.device}; both must be on the same device"))
    torch._check(reduction in _REDUCTIONS, lambda: f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got '{reduction}'")


_SIXTEEN_BIT = (torch.bfloat16, torch.float16)  # their loss is float32


def _loss_shape(logits, reduction):
    return (logits.shape[0],) if reduction == "none" else ()


def _loss_dtype(logits):
    return torch.float32 if logits.dtype in _SIXTEEN_BIT else logits.dtype


@torch.library.register_fake("gpt_kernels::cross_entropy_fwd")
def _cross_entropy_fwd_fake(logits, targets, ignore_index, reduction, compute_grad):
    _check(logits, targets, reduction)
    loss = logits.new_empty(_loss_shape(logits, reduction), dtype=_loss_dtype(logits))
    grad = (torch.empty_like(logits, memory_format=torch.contiguous_format) if compute_grad
            else logits.new_empty((0,)))
    return loss, grad


@torch.library.register_fake("gpt_kernels::cross_entropy_fwd_inplace")
def _cross_entropy_fwd_inplace_fake(logits, targets, ignore_index, reduction):
    _check(logits, targets, reduction)
    return logits.new_empty(_loss_shape(logits, reduction), dtype=_loss_dtype(logits))


@torch.library.register_fake("gpt_kernels::cross_entropy_scale_grad_")
def _cross_entropy_scale_grad_fake(grad, grad_loss, targets, ignore_index, reduction):
    return None


@torch.library.register_fake("gpt_kernels::cross_entropy_regrad_")
def _cross_entropy_regrad_fake(grad, logits, grad_loss, targets, ignore_index, reduction):
    return None


def _scaled_grad(grad, grad_loss, targets, ignore_index, reduction, logits=None):
    """grad * upstream gradient (recomputed from `logits` when given: the 16-bit path): in place
    in eager mode when autograd frees the graph after this backward; on a copy when the graph is
    kept (another backward will read grad again) or when traced by torch.compile (functional
    graphs; inductor reinplaces the copy when it can)."""
    # traced: Dynamo (is_compiling) or AOTAutograd (FunctionalTensor / FakeTensor arguments)
    traced = torch.compiler.is_compiling() or type(grad) is not torch.Tensor
    if traced or torch._C._autograd._get_current_graph_task_keep_graph():
        grad = grad.clone()
    if logits is None:
        torch.ops.gpt_kernels.cross_entropy_scale_grad_(grad, grad_loss, targets, ignore_index, reduction)
    else:
        torch.ops.gpt_kernels.cross_entropy_regrad_(grad, logits, grad_loss, targets, ignore_index, reduction)
    return grad


def _fwd_setup_context(ctx, inputs, output):
    logits, targets, ignore_index, reduction, compute_grad = inputs
    _, grad = output
    # grad is an output only to be saved; without this, autograd would hand backward a zero
    # tensor of its size (N x V written for nothing) as "its gradient"
    ctx.set_materialize_grads(False)
    # float16: the backward recomputes from the logits unless the upstream factor is exactly 1
    ctx.save_for_backward(grad, targets, logits if logits.dtype == torch.float16 else None)
    ctx.ignore_index, ctx.reduction, ctx.compute_grad = ignore_index, reduction, compute_grad


def _fwd_backward(ctx, grad_loss, _grad_of_grad):
    if not ctx.compute_grad:
        raise RuntimeError("cross_entropy_fwd was called with compute_grad=False, so it saved no "
                           "gradient; call torch.ops.gpt_kernels.cross_entropy instead")
    if grad_loss is None:  # the loss was not used (grads are not materialized): no gradient
        return None, None, None, None, None
    grad, targets, logits = ctx.saved_tensors
    # create_graph=True runs this with grad mode on: the gradient computed here is no function of
    # the logits to autograd, so a second backward would silently give None; refuse instead
    if torch.is_grad_enabled() and not (torch.compiler.is_compiling() or type(grad) is not torch.Tensor):
        raise NotImplementedError("gpt_kernels.cross_entropy: double backward (gradients of gradients, "
                                  "create_graph=True) is not supported")
    return (_scaled_grad(grad, grad_loss, targets, ctx.ignore_index, ctx.reduction, logits),
            None, None, None, None)


torch.library.register_autograd("gpt_kernels::cross_entropy_fwd", _fwd_backward,
                                setup_context=_fwd_setup_context)


class _CrossEntropyInplace(torch.autograd.Function):
    """The fused forward writing the gradient over the logits buffer.

    The kernel's write is invisible to autograd, so forward bumps the logits' version counter
    itself (torch.autograd.graph.increment_version, the API for writes made by custom kernels;
    the counter is shared with the tensor a view was taken from). Any other node that saved the
    logits (or their base) for its backward, e.g. logits * w, then raises autograd's "modified
    by an inplace operation" error at backward instead of silently using the gradient as if it
    were the logits: the bug Liger-Kernel shipped. (mark_dirty would do the same but refuses
    views, and the logits of a language model are usually a view: logits.view(-1, V).)"""

    @staticmethod
    def forward(ctx, logits, targets, ignore_index, reduction):
        loss = torch.ops.gpt_kernels.cross_entropy_fwd_inplace(logits, targets, ignore_index, reduction)
        if not torch.compiler.is_compiling():  # compiled graphs are functionalized instead
            torch.autograd.graph.increment_version(logits)
        ctx.save_for_backward(logits, targets)  # after the bump: our own use is legitimate
        ctx.ignore_index, ctx.reduction = ignore_index, reduction
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad, targets = ctx.saved_tensors
        return _scaled_grad(grad, grad_loss, targets, ctx.ignore_index, ctx.reduction), None, None, None


def cross_entropy_inplace(logits, targets, ignore_index=-100, reduction="mean"):
    """Like torch.ops.gpt_kernels.cross_entropy, but the gradient overwrites `logits`.

    For when the caller's logits are dead after the loss (the usual `logits = lm_head(x);
    loss = ...`): it saves the N x V gradient buffer. After the call `logits` holds
    d loss / d logits (for an upstream gradient of 1) and must not be read again: that is the
    caller's promise, which no check can verify. With float16 logits the logits are gone when
    the backward runs, so an upstream factor other than 1 (a GradScaler's 65536) rescales the
    float16 gradient: entries of (p - y) / N below 2^-24 have already flushed to zero and others
    round twice. Use cross_entropy for float16 under a GradScaler. What is checked: the version counter of the
    logits is bumped, so if another op saved the logits for its backward, backward raises
    autograd's in-place error rather than computing a wrong gradient; logits that are a leaf
    requiring grad are refused, as torch refuses in-place ops on them. Without grad (inference,
    no_grad) it is the plain loss and leaves the logits alone.
    """
    if not (torch.is_grad_enabled() and logits.requires_grad):
        return torch.ops.gpt_kernels.cross_entropy(logits, targets, ignore_index, reduction)
    if logits.is_leaf:
        raise RuntimeError("cross_entropy_inplace: a leaf Variable that requires grad cannot be "
                           "overwritten by its gradient; use torch.ops.gpt_kernels.cross_entropy")
    return _CrossEntropyInplace.apply(logits, targets, ignore_index, reduction)
