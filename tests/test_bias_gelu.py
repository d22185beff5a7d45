"""Tests of torch.ops.gpt_kernels.bias_gelu (csrc/bias_gelu.cpp, csrc/cuda/bias_gelu.*).

bias_gelu(x, bias, approximate="none") = gelu(x + bias) with the exact (erf) GELU, or with
approximate="tanh" its tanh approximation (F.gelu(approximate="tanh"), GPT-2's); its backward
returns grad_x and grad_bias (summed over all rows). Reference: the same formula in float64 from
the same inputs (torch's float64 GELU of the same form), so the only error measured is the
kernel's; where torch's float64 formula itself loses accuracy (the tails, inf), the reference is
the stated semantics in float64 from the math module.
Tolerances: float32 computes an erfc accurate to ~1e-7 relative and rounds once: rtol 1e-5,
atol 1e-6 (values near 0 have tiny absolute errors); bf16/fp16 inputs are computed in float
and rounded once to half an ulp of the output (rtol 8e-3 / 1e-3). The bias gradient is summed
in fp32 (fp64 for fp64): its error is held to 1e-6 of the sum of |terms| plus the output's
rounding. Tests that take a device run on the CPU and, when a GPU is present, on CUDA (skipped,
saying so, when none is); the others are CPU-only or CUDA-only by what they check. The checks
every op gets (opcheck, torch.compile, gradcheck, CPU/CUDA agreement, bad input) are
tests/op_checks.py's, called here with this op's inputs.
"""
import math

import pytest
import torch
import torch.nn.functional as F

import gpt_kernels
from op_checks import DEVICES, check_compile_matches, check_cpu_and_cuda_agree, check_errors, check_gradcheck, \
    check_no_double_backward, check_opcheck, check_takes_exactly, cuda_cases

ops = torch.ops.gpt_kernels
# every (device, dtype) the kernels take (gpt_kernels.bias_gelu.DTYPES), in this order
ORDER = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
DTYPES = cuda_cases([(device, dtype) for device in ("cpu", "cuda")
                     for dtype in sorted(gpt_kernels.bias_gelu.DTYPES[device], key=ORDER.index)])
# awkward shapes: rows below, at and past the 32-row block of the bias gradient; widths below,
# at and past the 8 AVX2 lanes and the 256 threads of a CUDA block
SHAPES = [(1, 1), (1, 7), (3, 8), (5, 13), (32, 9), (33, 9), (2, 3, 257), (65, 100), (70, 1537)]
RTOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 8e-3, torch.float16: 1e-3}
ATOL = {torch.float64: 1e-12, torch.float32: 1e-6, torch.bfloat16: 1e-6, torch.float16: 1e-6}
SUM_TOL = {torch.float64: 1e-12, torch.float32: 1e-6, torch.bfloat16: 1e-6, torch.float16: 1e-6}
APPROXIMATE = list(gpt_kernels.bias_gelu.APPROXIMATE)  # the exact GELU, and the tanh approximation


def make_inputs(shape, device, dtype, seed, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=gen) * scale).to(device, dtype)
    bias = torch.randn(shape[-1], generator=gen).to(device, dtype)
    grad = torch.randn(shape, generator=gen).to(device, dtype)
    return x, bias, grad


def reference(x, bias, grad, approximate="none"):
    """out, grad_x, grad_bias and sum |grad_x| (per column) in float64."""
    xd = x.detach().double().requires_grad_()
    bd = bias.detach().double().requires_grad_()
    out = F.gelu(xd + bd, approximate=approximate)
    grad_x, grad_bias = torch.autograd.grad(out, (xd, bd), grad.double())
    abs_sum = grad_x.abs().reshape(-1, x.shape[-1]).sum(0)
    return out.detach(), grad_x, grad_bias, abs_sum


@pytest.mark.parametrize("approximate", APPROXIMATE)
@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_float64_reference_forward_and_backward(device, dtype, shape, approximate):
    x, bias, grad = make_inputs(shape, device, dtype, seed=hash(shape) % 2**31)
    x.requires_grad_()
    bias.requires_grad_()
    # the old two-argument call is the exact GELU
    out = ops.bias_gelu(x, bias) if approximate == "none" else ops.bias_gelu(x, bias, approximate)
    assert out.dtype == dtype and out.shape == x.shape and out.device == x.device
    out.backward(grad)
    ref_out, ref_gx, ref_gb, abs_sum = reference(x, bias, grad, approximate)
    rtol, atol = RTOL[dtype], ATOL[dtype]
    torch.testing.assert_close(out.double(), ref_out, rtol=rtol, atol=atol)
    torch.testing.assert_close(x.grad.double(), ref_gx, rtol=rtol, atol=atol)
    assert bias.grad.dtype == dtype
    err = (bias.grad.double() - ref_gb).abs()
    allowed = SUM_TOL[dtype] * abs_sum + rtol * ref_gb.abs() + atol
    assert (err <= allowed).all(), f"bias grad error {err.max().item():.3g} above tolerance"


# (device, row width): on the CPU a width of 7 runs the scalar formula (the AVX2 loop takes 8
# lanes at a time), the one CUDA runs too
ACCURACY_PATHS = cuda_cases([("cpu", 1000), ("cpu", 7), ("cuda", 1000)])


@pytest.mark.parametrize("device,width", ACCURACY_PATHS)
def test_float32_accuracy_over_the_whole_range(device, width):
    """Relative accuracy where torch's float GELU loses it: the negative tail (1 + erf cancels)."""
    u = torch.linspace(-12, 12, 203_000)  # divisible by both widths
    ud = u.double()
    # float64 through erfc: even float64's 1 + erf(u / sqrt 2) rounds to 0 below u ~ -8.3
    ref = 0.5 * ud * torch.special.erfc(-ud / math.sqrt(2))
    ref_grad = 0.5 * torch.special.erfc(-ud / math.sqrt(2)) + ud * torch.exp(-0.5 * ud * ud) / math.sqrt(2 * math.pi)
    x = u.to(device).view(-1, width)
    bias = torch.zeros(width, device=device)
    out = ops.bias_gelu(x, bias).flatten().double().cpu()
    rel = ((out - ref).abs() / ref.abs()).nan_to_num(0.0)  # 0 / 0 at u = 0
    # measured: 1.8e-6 where |gelu| > 1e-6 (u > -4.89), 1.4e-5 down to -12 (torch's: 3%, then 100%)
    assert rel[ud > -4.89].max().item() < 3e-6
    assert rel.max().item() < 2e-5, f"max relative error {rel.max().item():.3g} (u = {ud[rel.argmax()].item():.4f})"
    grad_x, _ = ops.bias_gelu_backward(torch.ones_like(x), x, bias)
    assert (grad_x.flatten().double().cpu() - ref_grad).abs().max().item() < 1e-6


def gelu_tanh_float64(u):
    """gelu_tanh(u) and its derivative in float64, written as u sigmoid(2z) with exp(-2|z|), which
    neither overflows nor cancels (torch's 0.5 u (1 + tanh z) rounds to 0 in the negative tail)."""
    z2 = 2 * math.sqrt(2 / math.pi) * u * (1 + 0.044715 * u * u)  # 2z
    e = torch.exp(-z2.abs())
    r = 1 / (1 + e)
    s = torch.where(z2 < 0, e * r, r)
    return u * s, s + u * 2 * math.sqrt(2 / math.pi) * e * r * r * (1 + 3 * 0.044715 * u * u)


@pytest.mark.parametrize("device,width", ACCURACY_PATHS)
def test_float32_tanh_accuracy_over_the_whole_range(device, width):
    """The tanh form keeps its relative accuracy in the negative tail too (torch's float formula:
    7% off at |gelu_tanh| = 1e-6); below ~1e-37 (u < -10) float32's exp underflows to 0."""
    u = torch.linspace(-12, 12, 203_000)
    ud = u.double()
    ref, ref_grad = gelu_tanh_float64(ud)
    x = u.to(device).view(-1, width)
    bias = torch.zeros(width, device=device)
    out = ops.bias_gelu(x, bias, "tanh").flatten().double().cpu()
    rel = ((out - ref).abs() / ref.abs()).nan_to_num(0.0)
    # measured: 1.9e-6 where |gelu_tanh| > 1e-6 (u > -4.77), 1.2e-5 where > 1e-36 (u > -9.9)
    assert rel[ref.abs() > 1e-6].max().item() < 3e-6
    assert rel[ref.abs() > 1e-36].max().item() < 2e-5
    assert (out - ref).abs().max().item() < 1e-6 and (out - ref)[ref.abs() <= 1e-36].abs().max().item() < 2e-37
    grad_x, _ = ops.bias_gelu_backward(torch.ones_like(x), x, bias, "tanh")
    assert (grad_x.flatten().double().cpu() - ref_grad).abs().max().item() < 1e-6


def gelu_semantics(u):
    """gelu(u) and gelu'(u) as stated, in float64 from the math module (never from torch, whose
    float GELU differs by CPU: its AVX-512 path gives gelu(inf) = nan). gelu(+inf) = +inf,
    gelu(-inf) = 0 (either sign), gelu'(+inf) = 1, gelu'(-inf) = 0, NaN stays NaN."""
    if math.isnan(u):
        return math.nan, math.nan
    if math.isinf(u):
        return (u, 1.0) if u > 0 else (0.0, 0.0)
    erfc = math.erfc(-u / math.sqrt(2))
    density = math.exp(-0.5 * u * u) / math.sqrt(2 * math.pi) if abs(u) < 1e150 else 0.0
    return 0.5 * u * erfc, 0.5 * erfc + u * density


# Results of these inputs: exact (inf, 1e38, 0.5), +-0, or below the normal range (-13.5: gelu
# ~ -1e-40, a float32 subnormal, which the float kernel may flush to 0, as torch's does: held to
# the dtype's smallest normal in absolute terms, 1.2e-38 for float32)
EXTREME_INPUTS = [math.inf, -math.inf, math.nan, 1e38, -1e38, 3e30, -3e30, 20.0, -20.0, -13.5,
                  0.0, -0.0]


def gelu_tanh_semantics(u):
    """gelu_tanh(u) and its derivative as stated (csrc/gelu_math.h), in float64 from the math
    module: the limits of gelu, NaN stays NaN; elsewhere u sigmoid(2z) through exp(-2|z|)."""
    if math.isnan(u):
        return math.nan, math.nan
    if math.isinf(u):
        return (u, 1.0) if u > 0 else (0.0, 0.0)
    z2 = 2 * math.sqrt(2 / math.pi) * u * (1 + 0.044715 * u * u)  # inf for huge |u|: e = 0
    e = math.exp(-abs(z2))
    r = 1 / (1 + e)
    s = e * r if z2 < 0 else r
    slope = u * 2 * math.sqrt(2 / math.pi) * e * r * r * (1 + 3 * 0.044715 * u * u) if e > 0 else 0.0
    return (u * s if s > 0 else 0.0), s + slope


@pytest.mark.parametrize("approximate", APPROXIMATE)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("width", [8, 7])  # the SIMD and the scalar loop of the CPU kernel
def test_non_finite_and_huge_inputs_follow_the_stated_semantics(device, dtype, width, approximate):
    values = EXTREME_INPUTS * 2
    x = torch.tensor(values, device=device, dtype=dtype)[: len(values) // width * width].view(-1, width)
    bias = torch.zeros(width, device=device, dtype=dtype)
    semantics = gelu_semantics if approximate == "none" else gelu_tanh_semantics
    expected = [semantics(u) for u in x.flatten().tolist()]
    out_ref = torch.tensor([e[0] for e in expected], dtype=torch.float64).view_as(x)
    grad_ref = torch.tensor([e[1] for e in expected], dtype=torch.float64).view_as(x)
    out = ops.bias_gelu(x, bias, approximate).double().cpu()
    grad_x, _ = ops.bias_gelu_backward(torch.ones_like(x), x, bias, approximate)
    for name, got, ref in (("gelu", out, out_ref), ("gelu'", grad_x.double().cpu(), grad_ref)):
        torch.testing.assert_close(got, ref, equal_nan=True, rtol=2e-5,
                                   atol=torch.finfo(dtype).tiny,
                                   msg=lambda m: f"{name} at extreme inputs: {m}")
        assert torch.equal(got.isnan(), ref.isnan()), f"{name}: NaN where none is expected, or none where one is"


@pytest.mark.parametrize("approximate", APPROXIMATE)
def test_equals_linear_then_gelu_as_the_model_uses_it(approximate):
    """bias_gelu(x @ W^T, b, a) is F.gelu(F.linear(x, W, b), approximate=a): values and all three
    gradients."""
    torch.manual_seed(0)
    x = torch.randn(4, 9, 48, requires_grad=True)
    w = (torch.randn(192, 48) * 0.1).requires_grad_()
    b = (torch.randn(192) * 0.1).requires_grad_()
    ours = ops.bias_gelu(F.linear(x, w), b, approximate=approximate)
    ref = F.gelu(F.linear(x, w, b), approximate=approximate)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(ref)
    ga = torch.autograd.grad(ours, (x, w, b), g)
    gb = torch.autograd.grad(ref, (x, w, b), g)
    for a, c in zip(ga, gb):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("approximate", APPROXIMATE)
def test_bias_gradient_does_not_depend_on_the_thread_count(approximate):
    x, bias, grad = make_inputs((1000, 300), "cpu", torch.float32, seed=3)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append(ops.bias_gelu_backward(grad, x, bias, approximate))
    finally:
        torch.set_num_threads(threads)
    for grad_x, grad_bias in results[1:]:
        assert torch.equal(grad_x, results[0][0]) and torch.equal(grad_bias, results[0][1])


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_and_empty_inputs(device):
    x, bias, grad = make_inputs((6, 40), device, torch.float32, seed=4)
    xt = x.t()  # (40, 6) view, bias of 6
    b6 = bias[:6]
    torch.testing.assert_close(ops.bias_gelu(xt, b6), F.gelu(xt + b6), rtol=1e-5, atol=1e-6)
    b_strided = bias[::2]  # 20 elements, stride 2
    x20 = x[:, :20]
    torch.testing.assert_close(ops.bias_gelu(x20, b_strided), F.gelu(x20 + b_strided), rtol=1e-5, atol=1e-6)
    empty = torch.empty(0, 5, device=device)
    assert ops.bias_gelu(empty, torch.ones(5, device=device)).shape == (0, 5)
    gx, gb = ops.bias_gelu_backward(empty, empty, torch.ones(5, device=device))
    assert gx.shape == (0, 5) and torch.equal(gb, torch.zeros(5, device=device))


@pytest.mark.parametrize("approximate", APPROXIMATE)
def test_gradcheck_float64(approximate):
    x = torch.randn(5, 11, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(11, dtype=torch.float64, requires_grad=True)
    check_gradcheck(lambda x, b: ops.bias_gelu(x, b, approximate), x, bias)


@pytest.mark.parametrize("approximate", APPROXIMATE)
def test_double_backward_is_refused_clearly(approximate):
    check_no_double_backward("bias_gelu", lambda x, b: ops.bias_gelu(x, b, approximate),
                             torch.randn(5, 11, dtype=torch.float64, requires_grad=True),
                             torch.randn(11, dtype=torch.float64, requires_grad=True))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    x = torch.randn(3, 5, 70, device=device, requires_grad=True)
    bias = torch.randn(70, device=device, requires_grad=True)
    grad = torch.randn(3, 5, 70, device=device)
    check_opcheck((ops.bias_gelu.default, (x, bias)),  # approximate left to its default
                  (ops.bias_gelu_backward.default, (grad, x.detach(), bias.detach())),
                  *[(ops.bias_gelu.default, (x, bias, approximate)) for approximate in APPROXIMATE],
                  *[(ops.bias_gelu_backward.default, (grad, x.detach(), bias.detach(), approximate))
                    for approximate in APPROXIMATE])


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile(device):
    def mlp(x, w, b):  # both forms
        h = x @ w.t()
        return ops.bias_gelu(h, b) * 2 + ops.bias_gelu(h, b, "tanh")

    x = torch.randn(4, 24, device=device, requires_grad=True)
    w = torch.randn(40, 24, device=device, requires_grad=True)
    b = torch.randn(40, device=device, requires_grad=True)
    check_compile_matches(mlp, x, w, b)


def test_bad_inputs_raise_clear_errors():
    x = torch.randn(4, 8)
    gelu, backward = ops.bias_gelu, ops.bias_gelu_backward
    check_errors(("bias has 7 elements but x's last dimension is 8", gelu, x, torch.randn(7)),
                 (r"bias must be 1-D \(N,\)", gelu, x, torch.randn(1, 8)),
                 ("x and bias must have the same dtype", gelu, x, torch.randn(8, dtype=torch.float64)),
                 ("x must be a floating-point tensor", gelu, torch.ones(4, 8, dtype=torch.int64),
                  torch.ones(8, dtype=torch.int64)),
                 ("at least one dimension", gelu, torch.tensor(1.0), torch.ones(1)),
                 ("grad_out must have x's shape", backward, torch.randn(4, 9), x, torch.randn(8)),
                 ("grad_out must have x's dtype", backward, x.double(), x, torch.randn(8)),
                 ("approximate must be 'none' .* or 'tanh', got 'tanh2'", gelu, x, torch.randn(8), "tanh2"),
                 ("bias_gelu_backward: approximate must be", backward, x, x, torch.randn(8), "erf"))


@pytest.mark.parametrize("device", DEVICES)
def test_takes_the_dtypes_it_states(device):
    """gpt_kernels.bias_gelu.DTYPES, what gpt_kernels.unsupported() answers from; every form of
    gpt_kernels.bias_gelu.APPROXIMATE."""
    def run(dtype):
        x, bias, grad = make_inputs((3, 70), device, dtype, seed=5)
        for approximate in APPROXIMATE:
            ops.bias_gelu(x, bias, approximate)
            ops.bias_gelu_backward(grad, x, bias, approximate)
    check_takes_exactly(gpt_kernels.bias_gelu.DTYPES[device], run)


@pytest.mark.cuda
def test_bad_inputs_cuda():
    check_errors(("x and bias must be on the same device", ops.bias_gelu, torch.randn(4, 8, device="cuda"),
                  torch.randn(8)))


@pytest.mark.cuda
@pytest.mark.parametrize("approximate", APPROXIMATE)
def test_cpu_and_cuda_agree(approximate):
    x, bias, grad = make_inputs((300, 1537), "cpu", torch.float32, seed=8)
    check_cpu_and_cuda_agree(lambda x, b: ops.bias_gelu(x, b, approximate), x, bias, rtol=2e-6, atol=1e-7)
    # grad_x, then grad_bias (summed over 300 rows in another order)
    check_cpu_and_cuda_agree(lambda g, x, b: ops.bias_gelu_backward(g, x, b, approximate), grad, x, bias,
                             rtol=(2e-6, 1e-5), atol=(1e-7, 1e-5))


@pytest.mark.cuda
def test_more_rows_than_one_grid_on_cuda():
    """rows above 2^20 (the forward's grid) and rows / 32 above 65535 (the backward's grid.y):
    the grid-stride loops over rows and row blocks."""
    rows = 65535 * 32 + 37
    x, bias, grad = make_inputs((rows, 3), "cuda", torch.float32, seed=9)
    torch.testing.assert_close(ops.bias_gelu(x, bias).double(), F.gelu(x.double() + bias.double()),
                               rtol=1e-5, atol=1e-6)
    gx, gb = ops.bias_gelu_backward(grad, x, bias)
    _, ref_gx, ref_gb, abs_sum = reference(x, bias, grad)
    torch.testing.assert_close(gx.double(), ref_gx, rtol=1e-5, atol=1e-6)
    assert ((gb.double() - ref_gb).abs() <= 1e-6 * abs_sum + 1e-6).all()


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_on_cuda_as_the_model_calls_it(dtype):
    """Under autocast the matmul's output has the autocast dtype and the bias parameter is fp32:
    the model casts the bias, as F.linear does, and the op keeps that dtype (no fixed bf16 cast)."""
    x = torch.randn(8, 64, device="cuda", requires_grad=True)
    w = torch.randn(96, 64, device="cuda", requires_grad=True)
    b = torch.randn(96, device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=dtype):
        h = F.linear(x, w)
        out = ops.bias_gelu(h, b.to(h.dtype))
    assert out.dtype == dtype
    out.float().sum().backward()
    assert b.grad.dtype == torch.float32 and w.grad.dtype == torch.float32
    with torch.autocast("cuda", dtype=dtype):
        ref = F.gelu(F.linear(x, w, b))
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)


@pytest.mark.cuda
def test_mixed_dtypes_under_autocast_get_the_clear_error():
    with torch.autocast("cuda", dtype=torch.bfloat16):
        h = F.linear(torch.randn(4, 8, device="cuda"), torch.randn(16, 8, device="cuda"))
        with pytest.raises(RuntimeError, match="x and bias must have the same dtype"):
            ops.bias_gelu(h, torch.randn(16, device="cuda"))
