"""Tests of the fused cross-entropy op, torch.ops.gpt_kernels.cross_entropy (issue 3).

Reference: F.cross_entropy in float64 on the same (upcast) inputs; loss and d loss / d logits.
Tolerances (per dtype, relative to the reference, with the absolute part scaled by the largest
reference value so that small "mean" gradients are held to the same standard):
    float32   rtol 1e-4, atol 1e-5 * max   (the CPU exp is accurate to 20 ulp, 2.4e-6)
    bfloat16  rtol 1.6e-2, atol 1e-2 * max (the output is rounded to 8 bits: 2^-8 = 3.9e-3)
    float16   rtol 2e-3, atol 1e-3 * max   (11 bits: 2^-11 = 4.9e-4)
The CUDA cases are the same tests on device "cuda", skipped only when no GPU is present. The
checks every op gets (opcheck, torch.compile, gradcheck, bad input) are tests/op_checks.py's,
called here with this op's inputs; the training comparison of --kernels ext with --kernels torch
is tests/test_ext_model.py's.
"""
import math

import pytest
import torch
import torch.nn.functional as F

import gpt_kernels
from op_checks import DEVICES, check_compile_matches, check_errors, check_gradcheck, check_opcheck, check_takes_exactly

ce = torch.ops.gpt_kernels.cross_entropy
TOL = {torch.float32: (1e-4, 1e-5), torch.bfloat16: (1.6e-2, 1e-2), torch.float16: (2e-3, 1e-3),
       torch.float64: (1e-10, 1e-12)}


def assert_close(actual, expected, dtype):
    rtol, atol = TOL[dtype]
    scale = expected.abs()[expected.isfinite()].max().item() if expected.isfinite().any() else 1.0
    torch.testing.assert_close(actual.double(), expected, rtol=rtol, atol=atol * max(scale, 1e-30),
                               equal_nan=True)


def reference(x, t, ignore_index=-100, reduction="mean", upstream=None):
    x64 = x.detach().double().requires_grad_()
    loss = F.cross_entropy(x64, t, ignore_index=ignore_index, reduction=reduction)
    loss.backward(torch.ones_like(loss) if upstream is None else upstream.double())
    return loss.detach(), x64.grad


def ours(x, t, ignore_index=-100, reduction="mean", upstream=None, op=None):
    xo = x.detach().clone().requires_grad_()
    loss = (op or ce)(xo, t, ignore_index, reduction)
    loss.backward(torch.ones_like(loss) if upstream is None else upstream.to(loss.dtype))
    return loss.detach(), xo.grad


def check_against_reference(x, t, dtype, ignore_index=-100, reduction="mean", upstream=None):
    """ours(...) against reference(...): loss and gradient within dtype's tolerance; returns ours."""
    loss, grad = ours(x, t, ignore_index, reduction, upstream)
    ref_loss, ref_grad = reference(x, t, ignore_index, reduction, upstream)
    assert loss.shape == ref_loss.shape and grad.shape == x.shape
    assert_close(loss, ref_loss, dtype)
    assert_close(grad, ref_grad, dtype)
    return loss, grad


def make(n, v, dtype, device, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, v, generator=g) * scale).to(dtype).to(device)
    t = torch.randint(0, v, (n,), generator=g).to(device)
    return x, t


def upstream_for(kind, reduction, n, device):
    if kind == "one":
        return None
    if reduction == "none":
        return torch.randn(n, generator=torch.Generator().manual_seed(1)).to(device)
    return torch.tensor(0.7, device=device)


# ---------------------------------------------------------------------------------------------
# Loss and gradient against float64 F.cross_entropy

SHAPES = [(1, 1), (1, 3), (5, 3), (37, 1000), (130, 1003), (3, 50257)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("upstream", ["one", "random"])
def test_matches_float64_reference(device, dtype, shape, reduction, upstream):
    n, v = shape
    x, t = make(n, v, dtype, device)
    if n > 4:
        t[3] = -100  # an ignored row among the others
    up = upstream_for(upstream, reduction, n, device)
    loss, grad = check_against_reference(x, t, dtype, reduction=reduction, upstream=up)
    assert loss.dtype == (torch.float32 if dtype != torch.float64 else dtype)
    assert grad.dtype == dtype
    if n > 4:
        assert (grad[3] == 0).all() and (reduction != "none" or loss[3] == 0)


# ---------------------------------------------------------------------------------------------
# 16-bit gradients: as accurate as F.cross_entropy's own, under a GradScaler's factors too

def relative_error_16bit(grad, ref, dtype):
    """max over elements of |grad - ref| / max(|ref|, smallest normal of dtype): relative error
    for normal results, error in units of the smallest normal for subnormal ones (correct
    rounding gives at most half an ulp, 2^-11 for float16 and 2^-8 for bfloat16, in both
    ranges). Where the correctly rounded result overflows to +-inf, grad must be that inf;
    any other mismatch there, or a NaN anywhere, counts as an infinite error. float32 arithmetic
    (ref from float64, rounded once to float32) measures errors of 2^-11 to ~1e-4 of themselves."""
    grad, ref = grad.float().cpu(), ref.cpu()
    overflow = ref.to(dtype).isinf()
    if (overflow & (grad != ref.sign() * math.inf)).any() or grad.isnan().any():
        return float("inf")
    err = (grad - ref).abs_().div_(ref.abs().clamp_min_(torch.finfo(dtype).tiny))
    return err.masked_fill_(overflow, 0).max().item()


# (4097, 1000) and (1269, 32000): where rescaling a stored float16 gradient lost precision;
# (37, 1003): rows below any block size
GRAD16_SHAPES = [(37, 1003), (4097, 1000), (1269, 32000)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", GRAD16_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_16bit_gradients_are_as_accurate_as_torch_under_any_upstream_factor(device, dtype, shape):
    """Required: within 1.25x of F.cross_entropy's own error in that dtype, for upstream factors
    1, 65536 (a GradScaler's) and 1/65536, every reduction. Also held, whatever torch does on
    this CPU: within 0.55 ulp of the correctly rounded value (the kernel rounds once, from fp32),
    and no gradient flushed to 0 whose correctly rounded value is not 0."""
    n, v = shape
    x, t = make(n, v, dtype, device)
    t[3] = -100
    # d loss_i / d x_ij for a unit upstream gradient, in float64 from the same 16-bit logits
    x64 = x.double().cpu()
    unit = torch.softmax(x64, 1)
    valid = t.cpu() != -100
    unit[torch.arange(n)[valid], t.cpu()[valid]] -= 1
    unit[~valid] = 0
    unit = unit.float()  # 6e-8 relative: far below the 16-bit errors measured
    eps = torch.finfo(dtype).eps
    for reduction in ("mean", "sum", "none"):
        base = 1.0 / valid.sum().item() if reduction == "mean" else 1.0
        for factor in (1.0, 65536.0, 1.0 / 65536):
            up = torch.full((n,) if reduction == "none" else (), factor, device=device)
            ref = unit * (base * factor)
            loss, grad = ours(x, t, reduction=reduction, upstream=up)
            xt = x.detach().clone().requires_grad_()
            torch_loss = F.cross_entropy(xt, t, reduction=reduction)
            # F.cross_entropy's loss is 16-bit here: 65536 in float16 is inf, so its error
            # is infinite in that case and only the ulp bound below constrains ours
            torch_loss.backward(up.to(torch_loss.dtype))
            err = relative_error_16bit(grad, ref, dtype)
            torch_err = relative_error_16bit(xt.grad, ref, dtype)
            where = f"{dtype} {shape} {reduction} x{factor:g}"
            assert loss.dtype == torch.float32, where
            assert err <= 0.55 * eps, f"{where}: error {err:.3g} ulp-relative, above 0.55 eps ({eps:.3g})"
            assert err <= 1.25 * torch_err, f"{where}: error {err:.3g} vs F.cross_entropy's {torch_err:.3g}"
            # lost: 0 where the exact value is clearly above half the smallest subnormal (the
            # kernel's fp32 error may round values at that boundary either way)
            boundary = torch.finfo(dtype).smallest_normal * eps / 2  # half the smallest subnormal
            lost = (grad.cpu() == 0) & (ref.abs() > boundary * 1.001)
            assert not lost.any(), f"{where}: {lost.sum().item()} gradients flushed to 0"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16bit_loss_is_float32(device, dtype):
    """As F.cross_entropy's under autocast: a 16-bit loss would round the logged loss to ~0.03
    and overflow a GradScaler's first step. Every reduction, with and without a gradient."""
    x, t = make(33, 257, dtype, device)
    for reduction in ("mean", "sum", "none"):
        ref_loss, _ = reference(x, t, reduction=reduction)
        for requires_grad in (False, True):
            loss = ce(x.clone().requires_grad_(requires_grad), t, -100, reduction)
            assert loss.dtype == torch.float32
            torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-5, atol=1e-5)
    if device == "cuda":
        with torch.autocast("cuda", dtype=dtype):
            logits = torch.randn(16, 64, device="cuda") @ torch.randn(64, 100, device="cuda")
            assert logits.dtype == dtype
            assert ce(logits, t[:16].clamp(max=99)).dtype == F.cross_entropy(logits, t[:16].clamp(max=99)).dtype


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_wide_vocabulary_not_a_multiple_of_the_vector_width(device, dtype):
    x, t = make(2, 262147, dtype, device)  # V >= 262144, V % 8 != 0
    for reduction in ("mean", "none"):
        check_against_reference(x, t, dtype, reduction=reduction)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_large_magnitudes(device, dtype):
    x, t = make(16, 1000, dtype, device, scale=1e4)
    x[:, 7] = 1e4  # ties at the maximum
    loss, _ = check_against_reference(x, t, dtype, reduction="none")
    assert loss.isfinite().all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_minus_infinity_entries(device, dtype):
    x, t = make(6, 37, dtype, device)
    x[:, ::3] = float("-inf")          # many -inf entries, some rows start with one
    t[0], t[1] = 1, 2                  # targets on finite entries
    t[2] = 0                           # target logit -inf: loss inf, like torch
    x[3, :] = float("-inf")
    x[3, 5] = 0.0                      # a single finite entry: loss 0 at its target
    t[3] = 5
    for reduction in ("none", "sum"):
        check_against_reference(x, t, dtype, reduction=reduction)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ignore_index", [-100, 3])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ignore_index(device, ignore_index, reduction):
    x, t = make(40, 17, torch.float32, device)
    t[::3] = ignore_index
    _, grad = check_against_reference(x, t, torch.float32, ignore_index, reduction)
    assert (grad[::3] == 0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_rows_ignored_behaves_like_torch(device, reduction):
    """Stated, as F.cross_entropy defines it: "mean" of no rows is 0/0 = nan, "sum" is 0,
    "none" is all zeros; the gradient is zero everywhere."""
    x, t = make(8, 11, torch.float32, device)
    t[:] = -100
    loss, grad = ours(x, t, reduction=reduction)
    expected = {"mean": torch.tensor(math.nan), "sum": torch.tensor(0.0), "none": torch.zeros(8)}[reduction]
    torch.testing.assert_close(loss.cpu(), expected, equal_nan=True, rtol=0, atol=0)
    assert (grad == 0).all()


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs(device):
    xt, _ = make(1003, 64, torch.float32, device)
    x = xt.t()                                    # (64, 1003), column-major
    t = torch.randint(0, 1003, (128,), device=device)[::2]
    assert not x.is_contiguous() and not t.is_contiguous()
    check_against_reference(x, t, torch.float32)
    # a row-misaligned view (storage offset of one element)
    base, t2 = make(9, 1001, torch.bfloat16, device)
    check_against_reference(base.view(-1)[1:1 + 8 * 1000].view(8, 1000), t2[:8].clamp(max=999), torch.bfloat16)


@pytest.mark.parametrize("device", DEVICES)
def test_no_grad_gives_the_loss_only(device):
    x, t = make(33, 100, torch.float32, device)
    x.requires_grad_()
    with torch.no_grad():
        loss = ce(x, t)
    assert not loss.requires_grad
    assert_close(loss, reference(x, t)[0], torch.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_backward_twice_through_a_kept_graph(device, reduction):
    # The saved gradient is scaled in place only when the graph is freed: a second backward
    # through a retained graph must see it unchanged (the Liger reduction/upstream trap).
    x, t = make(20, 50, torch.float32, device)
    xo = x.clone().requires_grad_()
    loss = ce(xo, t, -100, reduction)
    up = torch.full_like(loss, 0.5)
    (g1,) = torch.autograd.grad(loss, xo, up, retain_graph=True)
    (g2,) = torch.autograd.grad(loss, xo, up * 4)
    ref = reference(x, t, reduction=reduction, upstream=up)[1]
    assert_close(g1, ref, torch.float32)
    assert_close(g2, 4 * ref, torch.float32)


def test_gradcheck_float64_cpu():
    g = torch.Generator().manual_seed(0)
    for reduction in ("mean", "sum", "none"):
        x = torch.randn(6, 7, dtype=torch.float64, generator=g, requires_grad=True)
        t = torch.randint(0, 7, (6,), generator=g)
        t[2] = -100
        check_gradcheck(lambda x: ce(x, t, -100, reduction), x)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    x, t = make(9, 13, torch.float32, device)
    t[2] = -100
    ops = torch.ops.gpt_kernels
    for reduction in ("mean", "sum", "none"):
        xg = x.clone().requires_grad_()
        up = torch.rand(9 if reduction == "none" else (), device=device)
        check_opcheck((ce, (xg, t, -100, reduction)),
                      (ops.cross_entropy_fwd, (xg, t, -100, reduction, True)),
                      (ops.cross_entropy_fwd, (x, t, -100, reduction, False)),
                      (ops.cross_entropy_fwd_inplace, (x.clone(), t, -100, reduction)),
                      (ops.cross_entropy_scale_grad_, (x.clone(), up, t, -100, reduction)),
                      # the 16-bit backward (any dtype works)
                      *[(ops.cross_entropy_regrad_, (torch.zeros_like(xd), xd, up, t, -100, reduction))
                        for xd in (x.to(torch.float32), x.to(torch.bfloat16))])


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile(device):
    def loss_fn(h, w, t):
        logits = h @ w.t()                          # (N, V)
        return ce(logits, t) + 0.5 * ce(logits, t, -100, "sum")

    g = torch.Generator().manual_seed(0)
    h = torch.randn(24, 16, generator=g).to(device)
    w = torch.randn(50, 16, generator=g).to(device)
    t = torch.randint(0, 50, (24,), generator=g).to(device)
    t[5] = -100

    def torch_loss(h, w, t):
        return F.cross_entropy(h @ w.t(), t) + 0.5 * F.cross_entropy(h @ w.t(), t, reduction="sum")

    compiled, _, le = check_compile_matches(loss_fn, h.clone().requires_grad_(), w.clone().requires_grad_(), t,
                                            reference=torch_loss, rtol=1e-5, atol=1e-5, grad_rtol=1e-4, grad_atol=1e-5)
    with torch.no_grad():  # the inference graph (loss only)
        torch.testing.assert_close(compiled(h, w, t), le.detach(), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# The in-place option: gpt_kernels.cross_entropy_inplace (the gradient overwrites the logits)

def _model(device, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(30, 8, generator=g).to(device, dtype).requires_grad_()
    w = torch.randn(41, 8, generator=g).to(device, dtype).requires_grad_()
    t = torch.randint(0, 41, (30,), generator=g).to(device)
    t[4] = -100
    return h, w, t


def _twin(*tensors):
    return [x.detach().clone().requires_grad_() for x in tensors]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_inplace_gradient_is_correct(device, dtype, reduction):
    h, w, t = _model(device, dtype)
    h2, w2 = _twin(h, w)
    logits = h @ w.t()
    ptr = logits.data_ptr()
    loss = gpt_kernels.cross_entropy_inplace(logits, t, reduction=reduction)
    up = torch.rand_like(loss) + 0.5
    loss.backward(up)
    ref = F.cross_entropy((h2 @ w2.t()).double(), t, reduction=reduction)
    ref.backward(up.double())
    assert logits.data_ptr() == ptr  # no copy was made
    assert_close(loss, ref.detach(), dtype)
    assert_close(h.grad, h2.grad.double(), dtype)
    assert_close(w.grad, w2.grad.double(), dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_inplace_refuses_logits_another_op_saved(device):
    h, w, t = _model(device)
    logits = h @ w.t()
    other = (logits * logits).sum()  # mul saves logits for its backward
    loss = gpt_kernels.cross_entropy_inplace(logits, t)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (loss + other).backward()


@pytest.mark.parametrize("device", DEVICES)
def test_inplace_stays_correct_when_the_other_use_saved_nothing(device):
    h, w, t = _model(device)
    h2, w2 = _twin(h, w)
    logits = h @ w.t()
    other = logits.sum() + (2 * logits).mean()  # neither saves logits
    (gpt_kernels.cross_entropy_inplace(logits, t) + other).backward()
    l2 = h2 @ w2.t()
    (F.cross_entropy(l2, t) + l2.sum() + (2 * l2).mean()).backward()
    torch.testing.assert_close(h.grad, h2.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(w.grad, w2.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_inplace_refuses_a_leaf(device):
    h, w, t = _model(device)
    leaf = (h @ w.t()).detach().requires_grad_()
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        gpt_kernels.cross_entropy_inplace(leaf, t)


@pytest.mark.parametrize("device", DEVICES)
def test_inplace_bumps_the_version_of_a_view_and_its_base(device):
    # The usual call: logits.view(-1, V) of a (B, T, V) tensor that another op saved.
    h, w, t = _model(device)
    logits3 = (h @ w.t()).view(5, 6, 41)
    saved = (logits3 * 2).exp().sum()  # exp saves its output, not logits3: fine
    other = logits3.pow(2).sum()       # pow saves logits3: must raise
    v0 = logits3._version
    loss = gpt_kernels.cross_entropy_inplace(logits3.view(-1, 41), t)
    assert logits3._version > v0
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (loss + other + saved).backward()


@pytest.mark.parametrize("device", DEVICES)
def test_inplace_without_grad_leaves_logits_alone(device):
    h, w, t = _model(device)
    with torch.no_grad():
        logits = h @ w.t()
        before = logits.clone()
        loss = gpt_kernels.cross_entropy_inplace(logits, t)
    assert torch.equal(logits, before)
    assert_close(loss, reference(before, t)[0], torch.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_inplace_on_a_non_contiguous_view(device):
    h, w, t = _model(device)
    h2, w2 = _twin(h, w)
    logits = (w @ h.t()).t()  # (30, 41) transposed view
    assert not logits.is_contiguous()
    gpt_kernels.cross_entropy_inplace(logits, t).backward()
    F.cross_entropy(h2 @ w2.t(), t).backward()
    torch.testing.assert_close(h.grad, h2.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(w.grad, w2.grad, rtol=1e-4, atol=1e-5)


def test_inplace_under_torch_compile():
    h, w, t = _model("cpu")
    h2, w2 = _twin(h, w)
    f = torch.compile(lambda h, w, t: gpt_kernels.cross_entropy_inplace(h @ w.t(), t))
    f(h, w, t).backward()
    F.cross_entropy(h2 @ w2.t(), t).backward()
    torch.testing.assert_close(h.grad, h2.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(w.grad, w2.grad, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Bad input: a clear exception naming the problem

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case,match", [
    ("n_mismatch", "rows but targets has"),
    ("logits_1d", "logits must be 2-D"),
    ("logits_3d", "logits must be 2-D"),
    ("targets_2d", "targets must be 1-D"),
    ("targets_int32", "targets must be int64"),
    ("targets_float", "targets must be int64"),
    ("logits_int", "logits must be float32"),
    ("target_equals_V", r"target 10 at row 2 is outside \[0, 10\)"),
    ("target_negative", r"target -1 at row 0 is outside \[0, 10\)"),
    ("n_zero", "N = 0"),
    ("v_zero", "V = 0"),
    ("bad_reduction", "reduction must be"),
])
def test_bad_input_raises(device, case, match):
    x = torch.randn(4, 10, device=device)
    t = torch.randint(0, 10, (4,), device=device)
    reduction = "mean"
    if case == "n_mismatch":
        t = t[:3]
    elif case == "logits_1d":
        x = x[0]
    elif case == "logits_3d":
        x = x[None]
    elif case == "targets_2d":
        t = t[:, None]
    elif case == "targets_int32":
        t = t.int()
    elif case == "targets_float":
        t = t.float()
    elif case == "logits_int":
        x = x.long()
    elif case == "target_equals_V":
        t[2] = 10
    elif case == "target_negative":
        t[0] = -1
    elif case == "n_zero":
        x, t = x[:0], t[:0]
    elif case == "v_zero":
        x = x[:, :0]
    elif case == "bad_reduction":
        reduction = "avg"
    for requires_grad in (False, True):
        xi = x.clone().requires_grad_(requires_grad and x.is_floating_point())
        with pytest.raises(RuntimeError, match=match):
            ce(xi, t, -100, reduction)
    if x.is_floating_point():
        with pytest.raises(RuntimeError, match=match):
            gpt_kernels.cross_entropy_inplace(x.clone().requires_grad_() * 1, t, -100, reduction)


@pytest.mark.parametrize("device", DEVICES)
def test_takes_the_dtypes_it_states(device):
    """gpt_kernels.cross_entropy.DTYPES, what gpt_kernels.unsupported() answers from."""
    t = torch.randint(0, 10, (4,), device=device)
    check_takes_exactly(gpt_kernels.cross_entropy.DTYPES[device],
                        lambda dtype: ce(torch.randn(4, 10, device=device, dtype=dtype), t))


def test_backward_ops_reject_bad_arguments():
    x = torch.randn(4, 10, dtype=torch.bfloat16)
    t = torch.randint(0, 10, (4,))
    up = torch.tensor(2.0)
    regrad = torch.ops.gpt_kernels.cross_entropy_regrad_
    check_errors(("grad must have the logits' shape and dtype", regrad, torch.zeros(4, 9, dtype=torch.bfloat16),
                  x, up, t, -100, "mean"),
                 ("grad must have the logits' shape and dtype", regrad, torch.zeros(4, 10), x, up, t, -100, "mean"),
                 ("the upstream gradient has 1 elements, expected 4", regrad, torch.zeros_like(x), x, up, t, -100,
                  "none"),
                 (r"target 10 at row 1 is outside \[0, 10\)", regrad, torch.zeros_like(x), x, up,
                  torch.tensor([0, 10, 1, 2]), -100, "sum"))


def test_bad_input_different_devices():
    check_errors(("same device", ce, torch.randn(4, 10), torch.randint(0, 10, (4,), device="meta")))


@pytest.mark.cuda
def test_bad_input_cpu_targets_for_cuda_logits():
    check_errors(("same device", ce, torch.randn(4, 10, device="cuda"), torch.randint(0, 10, (4,))))


# ---------------------------------------------------------------------------------------------
# CUDA only: 64-bit offsets (N * V > 2^31 elements)

@pytest.mark.cuda
def test_cuda_64bit_offsets():
    free, _ = torch.cuda.mem_get_info()
    n, v = 2**20, 2100  # 2.2e9 elements
    if free < 3 * n * v * 2:
        pytest.skip("not enough GPU memory for a 2^20 x 2100 bf16 test")
    x = torch.randn(n, v, device="cuda", dtype=torch.bfloat16)
    t = torch.randint(0, v, (n,), device="cuda")
    xo = x.requires_grad_()
    loss = ce(xo, t, -100, "sum")
    loss.backward()
    rows = torch.tensor([0, n // 2, n - 1], device="cuda")
    ref_loss, ref_grad = reference(x[rows], t[rows], reduction="none")
    ours_rows = ce(x[rows].detach(), t[rows], -100, "none")
    assert_close(ours_rows, ref_loss, torch.bfloat16)
    assert_close(xo.grad[rows], ref_grad, torch.bfloat16)


def test_double_backward_is_refused_not_silently_none():
    logits = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 7, (5,))
    with pytest.raises(NotImplementedError, match="gpt_kernels.cross_entropy: double backward"):
        torch.autograd.grad(ce(logits, targets), logits, create_graph=True)
    ce(logits, targets).backward()  # a plain backward still works
    expected = torch.autograd.grad(F.cross_entropy(logits, targets), logits)[0]
    torch.testing.assert_close(logits.grad, expected)
