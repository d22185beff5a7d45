"""Tests of torch.ops.gpt_kernels.causal_attention (csrc/causal_attention.cpp, csrc/cuda/).

Reference: explicit causal attention in float64 (softmax(q k^T * scale) masked above the
diagonal, times the dropout mask / (1-p), times v), on inputs rounded to the tested dtype.
Errors are measured as ||ours - ref|| / (||ref|| + sqrt(numel)) over the whole tensor, with tolerances per dtype:
fp32 2e-5 (the kernels accumulate in fp32; exp is a polynomial with < 2e-7 relative error),
fp64 1e-12, bf16 2e-2 and fp16 5e-3 (inputs of P and dS rounded to 8 / 11 mantissa bits).
The CUDA tests are the same functions parametrised over the device, skipped only when no GPU
is present. The checks every op gets (opcheck, torch.compile, gradcheck, CPU/CUDA agreement,
bad input) are tests/op_checks.py's, called here with this op's inputs.
"""
import math

import pytest
import torch

import gpt_kernels  # noqa: F401
from op_checks import (DEVICES, check_compile_matches, check_errors, check_gradcheck, check_no_double_backward,
                       check_opcheck, check_takes_exactly, cpu_and_cuda_outputs, cuda_cases)

ops = torch.ops.gpt_kernels
# (device, dtype) pairs the kernels support
DEVICE_DTYPES = cuda_cases([("cpu", torch.float32), ("cuda", torch.bfloat16), ("cuda", torch.float16)])
TOL = {torch.float64: 1e-12, torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 5e-3}


def default_dtype(device):
    return torch.float32 if device == "cpu" else torch.bfloat16


def reference(q, k, v, scale=None, keep=None, p=0.0):
    """Explicit causal attention in float64; keep: (B, H, T, T) bool dropout keep-mask."""
    q, k, v = q.double(), k.double(), v.double()
    T, D = q.shape[-2], q.shape[-1]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    s = (q @ k.transpose(-1, -2)) * scale
    s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    a = s.softmax(-1)
    if keep is not None:
        a = a * keep.to(a.device) / (1.0 - p)
    return a @ v


def rel_err(a, b):
    """||a - b|| / (||b|| + sqrt(numel)): relative for O(1) data, absolute where b is ~0 (the
    gradients of q and k vanish at T = 1, where ours are rounding noise)."""
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).norm() / (b.norm() + math.sqrt(b.numel()))).item()


def exact_or_close(a, b, device):
    """Bitwise equal on the CPU; on CUDA dq is summed with fp32 atomics in a run-dependent
    order, so results may differ in the last bits (one bf16 ulp after rounding)."""
    if device == "cpu":
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    else:
        torch.testing.assert_close(a, b, atol=1e-2, rtol=1e-2)


def make_qkv(B, H, T, D, device, dtype, requires_grad=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, T, D, generator=g).to(device=device, dtype=dtype)
            .requires_grad_(requires_grad) for _ in range(3)]


def check_against_reference(q, k, v, p=0.0, keep=None, rng_state=None, scale=None):
    """Forward and dq, dk, dv of ours against the float64 reference (with the same mask)."""
    dtype = q.dtype
    if p > 0:
        B, H, T, _ = q.shape
        out, lse, rng_state = ops.causal_attention_forward(q, k, v, p, scale or 1 / math.sqrt(q.shape[-1]),
                                                           1234)
        keep = ops.causal_attention_dropout_mask(B, H, T, p, rng_state)
    else:
        out = ops.causal_attention(q, k, v, 0.0, scale)
    ref = reference(q, k, v, scale, keep, p)
    assert out.shape == q.shape and out.dtype == dtype and out.device == q.device
    assert rel_err(out, ref) < TOL[dtype]
    grad = torch.randn_like(out)
    ours = torch.autograd.grad(out, (q, k, v), grad)
    theirs = torch.autograd.grad(ref, (q, k, v), grad.double())
    for name, a, b in zip("qkv", ours, theirs):
        assert a.dtype == dtype
        assert rel_err(a, b) < TOL[dtype] * 2, f"d{name}"


# --- correctness against the float64 reference -------------------------------------------------

@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("T", [1, 7, 64, 65, 256, 300])
@pytest.mark.parametrize("D", [32, 64, 128])
def test_matches_reference(device, dtype, T, D):
    B, H = (2, 3) if T <= 65 else (1, 2)
    check_against_reference(*make_qkv(B, H, T, D, device, dtype, seed=T * 1000 + D))


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("T", [7, 65, 300])
def test_dropout_matches_reference_with_same_mask(device, dtype, T):
    check_against_reference(*make_qkv(2, 2, T, 64, device, dtype, seed=T), p=0.25)


def test_float64_forward_and_gradients_exact():
    check_against_reference(*make_qkv(2, 2, 70, 32, "cpu", torch.float64))
    check_against_reference(*make_qkv(2, 2, 70, 32, "cpu", torch.float64), p=0.3)


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_custom_scale(device, dtype):
    check_against_reference(*make_qkv(1, 2, 65, 64, device, dtype), scale=0.3)


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_gradcheck_float64(p):
    q, k, v = make_qkv(1, 2, 9, 32, "cpu", torch.float64)
    fn = lambda q, k, v: ops.causal_attention_forward(q, k, v, p, 0.2, 7)[0]  # noqa: E731
    check_gradcheck(fn, q, k, v)
    q, k, v = make_qkv(2, 1, 70, 32, "cpu", torch.float64, seed=1)
    check_gradcheck(fn, q, k, v, fast_mode=True)


def test_double_backward_is_refused_clearly():
    check_no_double_backward("causal_attention", lambda q, k, v: ops.causal_attention(q, k, v, 0.2),
                             *make_qkv(1, 2, 9, 32, "cpu", torch.float64))
    check_no_double_backward("causal_attention", lambda qkv: ops.causal_attention_qkv(qkv, 2, 0.2),
                             torch.randn(1, 9, 3 * 64, dtype=torch.float64, requires_grad=True))


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs(device):
    """q, k, v as the model makes them: split of (B, T, 3C), .view(B,T,H,D).transpose(1,2)."""
    B, T, H, D = 2, 65, 3, 32
    dtype = default_dtype(device)
    x = torch.randn(B, T, 3 * H * D).to(device, dtype).requires_grad_()
    q, k, v = [t.view(B, T, H, D).transpose(1, 2) for t in x.split(H * D, dim=2)]
    assert not q.is_contiguous()
    out = ops.causal_attention(q, k, v)
    qc, kc, vc = [t.detach().contiguous().requires_grad_() for t in (q, k, v)]
    out_c = ops.causal_attention(qc, kc, vc)
    torch.testing.assert_close(out, out_c, atol=0, rtol=0)  # the forward has no atomics
    grad = torch.randn_like(out)
    (gx,) = torch.autograd.grad(out, x, grad)
    gq, gk, gv = torch.autograd.grad(out_c, (qc, kc, vc), grad, retain_graph=True)
    expected = torch.cat([g.transpose(1, 2).reshape(B, T, H * D) for g in (gq, gk, gv)], dim=2)
    exact_or_close(gx, expected, device)
    # a non-contiguous grad_out (a transposed view) too
    grad_t = torch.randn(B, T, H, D, device=device, dtype=dtype).transpose(1, 2)
    a = torch.autograd.grad(out_c, (qc, kc, vc), grad_t, retain_graph=True)
    b = torch.autograd.grad(out_c, (qc, kc, vc), grad_t.contiguous())
    for x1, x2 in zip(a, b):
        exact_or_close(x1, x2, device)


@pytest.mark.parametrize("device", DEVICES)
def test_backward_twice_same_result(device):
    """The backward must not modify what it saved (no in-place use of out, lse, grad_out)."""
    q, k, v = make_qkv(1, 2, 65, 64, device, default_dtype(device))
    out = ops.causal_attention(q, k, v, 0.2)
    grad = torch.randn_like(out)
    grad_copy = grad.clone()
    first = torch.autograd.grad(out, (q, k, v), grad, retain_graph=True)
    second = torch.autograd.grad(out, (q, k, v), grad)
    for a, b in zip(first, second):
        exact_or_close(a, b, device)
    torch.testing.assert_close(grad, grad_copy, atol=0, rtol=0)


def test_without_blas_fallback():
    """With no BLAS symbols (other torch builds) the tiles go through at::addmm: same results."""
    import os
    import subprocess
    import sys
    code = (
        "import math, torch, gpt_kernels\n"
        "torch.manual_seed(0)\n"
        "q, k, v = [torch.randn(2, 2, 70, 32, dtype=torch.float64, requires_grad=True) for _ in range(3)]\n"
        "out = torch.ops.gpt_kernels.causal_attention(q, k, v, 0.0)\n"
        "ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)\n"
        "g = torch.randn_like(out)\n"
        "a = torch.autograd.grad(out, (q, k, v), g); b = torch.autograd.grad(ref, (q, k, v), g)\n"
        "print(max([(out - ref).abs().max().item()] + [(x - y).abs().max().item() for x, y in zip(a, b)]))\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(gpt_kernels.__file__)))  # this build
    env = dict(os.environ, GPT_KERNELS_NO_BLAS="1",
               PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            timeout=120, cwd=root)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.strip().splitlines()[-1]) < 1e-10


# --- dropout --------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_dropout_same_seed_same_output(device):
    q, k, v = make_qkv(2, 2, 65, 64, device, default_dtype(device), requires_grad=False)
    torch.manual_seed(3)
    a = ops.causal_attention(q, k, v, 0.1)
    b = ops.causal_attention(q, k, v, 0.1)
    torch.manual_seed(3)
    c = ops.causal_attention(q, k, v, 0.1)
    assert torch.equal(a, c)
    assert not torch.equal(a, b)  # the generator moved on
    assert not torch.equal(a, ops.causal_attention(q, k, v, 0.0))


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_kept_fraction(p):
    B, H, T = 4, 4, 256
    torch.manual_seed(0)
    _, _, rng_state = ops.causal_attention_forward(*make_qkv(1, 1, 1, 32, "cpu", torch.float32, False),
                                                   p, 1.0)
    keep = ops.causal_attention_dropout_mask(B, H, T, p, rng_state)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    kept = keep[:, :, causal].float().mean().item()
    n = B * H * causal.sum().item()
    assert abs(kept - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)
    # neighbours are not correlated: P(keep j and keep j+1) = (1-p)^2
    both = (keep[..., 1:] & keep[..., :-1]).float().mean().item()
    assert abs(both - (1 - p) ** 2) < 0.01


def test_dropout_mask_is_a_function_of_indices():
    """The mask of element (b, h, i, j) does not depend on T (nor on the tiling)."""
    rng_state = torch.tensor([123456789, 5], dtype=torch.int64)
    small = ops.causal_attention_dropout_mask(2, 3, 40, 0.3, rng_state)
    large = ops.causal_attention_dropout_mask(2, 3, 100, 0.3, rng_state)
    assert torch.equal(small, large[:, :, :40, :40])
    other = ops.causal_attention_dropout_mask(2, 3, 40, 0.3, torch.tensor([123456789, 6]))
    assert not torch.equal(small, other)


@pytest.mark.parametrize("device", DEVICES)
def test_dropout_mask_recovered_from_kernel(device):
    """With q = k = 0 every causal row is uniform (1/(i+1)) and v = identity rows expose each
    probability: out[i, j] = keep[i, j] / ((1 - p) (i + 1)). The kernel's mask must be the one
    causal_attention_dropout_mask reports (the mask the backward regenerates)."""
    B, H, T, p = 2, 2, 32, 0.3
    dtype = default_dtype(device)
    q = torch.zeros(B, H, T, 32, device=device, dtype=dtype)
    v = torch.eye(T, 32, device=device, dtype=dtype).expand(B, H, T, 32).contiguous()
    out, _, rng_state = ops.causal_attention_forward(q, q, v, p, 1.0)
    keep = ops.causal_attention_dropout_mask(B, H, T, p, rng_state)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    assert torch.equal((out.float().cpu() != 0), keep & causal)


@pytest.mark.cuda
def test_cpu_and_cuda_draw_the_same_mask():
    B, H, T, D, p = 2, 3, 100, 64, 0.2
    q, k, v = make_qkv(B, H, T, D, "cpu", torch.float32, requires_grad=False)
    # bf16 on CUDA, the same (rounded) values in float32 on the CPU
    (out_cpu, _, rng_cpu), (out_cuda, _, rng_cuda) = cpu_and_cuda_outputs(
        lambda q, k, v: ops.causal_attention_forward(q, k, v, p, 0.125, 99), q, k, v, cuda_dtype=torch.bfloat16)
    assert torch.equal(rng_cpu, rng_cuda)
    assert rel_err(out_cuda, out_cpu) < TOL[torch.bfloat16]


@pytest.mark.cuda
@pytest.mark.parametrize("offset", [1, 3, 8])
def test_contiguous_views_at_an_odd_storage_offset_on_cuda(offset):
    """q, k, v and grad_out contiguous but starting `offset` elements into their buffer: off a
    16-byte boundary unless offset % 8 == 0. The launcher must copy such inputs to an aligned
    buffer (x.contiguous() returns them unchanged), not let the 16-byte loads fault."""
    B, H, T, D = 2, 3, 65, 64
    numel = B * H * T * D
    gen = torch.Generator().manual_seed(offset)

    def at_offset():
        buf = torch.randn(numel + offset, generator=gen).to("cuda", torch.bfloat16)
        view = buf[offset:].view(B, H, T, D)
        assert view.is_contiguous() and (view.data_ptr() % 16 == 0) == (offset % 8 == 0)
        return view

    q, k, v, grad = at_offset(), at_offset(), at_offset(), at_offset()
    scale = 1 / math.sqrt(D)
    out, lse, rng_state = ops.causal_attention_forward(q, k, v, 0.0, scale)
    dq, dk, dv = ops.causal_attention_backward(grad, q, k, v, out, lse, rng_state, 0.0, scale)
    torch.cuda.synchronize()  # a fault would surface here
    q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
    ref = reference(q64, k64, v64)
    assert rel_err(out, ref) < TOL[torch.bfloat16]
    for name, a, b in zip("qkv", (dq, dk, dv), torch.autograd.grad(ref, (q64, k64, v64), grad.double())):
        assert rel_err(a, b) < 2 * TOL[torch.bfloat16], f"d{name}"


@pytest.mark.cuda
def test_autocast_float32_inputs_on_cuda():
    q, k, v = make_qkv(1, 2, 65, 64, "cuda", torch.float32)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = ops.causal_attention(q, k, v)
    assert out.dtype == torch.bfloat16
    assert rel_err(out, reference(q, k, v)) < TOL[torch.bfloat16]
    out.float().sum().backward()
    assert q.grad is not None and q.grad.dtype == torch.float32


# --- the op's registration: opcheck, torch.compile ---------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    dtype = default_dtype(device)
    q, k, v = make_qkv(2, 2, 65, 32, device, dtype)
    check_opcheck((ops.causal_attention.default, (q, k, v), {"dropout_p": 0.0, "scale": None}),
                  (ops.causal_attention_forward, (q, k, v, 0.0, 0.2)),
                  (ops.causal_attention_forward, (q, k, v, 0.3, 0.2, 11)))
    # the backward op has no double backward: check it on inputs that do not require grad
    q, k, v = (t.detach() for t in (q, k, v))
    out, lse, rng_state = ops.causal_attention_forward(q, k, v, 0.3, 0.2, 11)
    check_opcheck((ops.causal_attention_backward,
                   (torch.randn_like(out), q, k, v, out, lse, rng_state, 0.3, 0.2)))


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile(device):
    dtype = default_dtype(device)

    def attend(q, k, v):  # the op alone: inductor then has no kernel of its own to compile
        return ops.causal_attention(q, k, v, 0.0)

    q, k, v = make_qkv(2, 2, 65, 64, device, dtype)
    check_compile_matches(attend, q, k, v)
    # with dropout: runs, and torch.manual_seed governs it under compile too
    compiled_drop = torch.compile(lambda q, k, v: ops.causal_attention(q, k, v, 0.5), fullgraph=True)
    torch.manual_seed(1)
    a = compiled_drop(q, k, v)
    torch.manual_seed(1)
    b = compiled_drop(q, k, v)
    assert torch.equal(a, b)
    a.sum().backward()


# --- bad input --------------------------------------------------------------------------------------

def test_bad_inputs_raise_clear_errors():
    q = torch.randn(2, 3, 16, 32)
    x48, x16 = torch.randn(1, 1, 4, 48), q.bfloat16()
    attend = ops.causal_attention
    check_errors((r"must be 4-D \(B, H, T, D\)", attend, q[0], q[0], q[0]),
                 ("must have the same shape", attend, q, q, torch.randn(2, 3, 17, 32)),
                 ("must have the same dtype", attend, q, q, q.double()),
                 (r"head dimension D = 48 is not supported; supported: 32, 64, 128", attend, x48, x48, x48),
                 *[(r"dropout_p must be in \[0, 1\)", attend, q, q, q, p) for p in (1.0, -0.1, 1.5)],
                 ("on the CPU q, k, v must be float32 or float64", attend, x16, x16, x16))


@pytest.mark.parametrize("device", DEVICES)
def test_takes_the_dtypes_and_head_sizes_it_states(device):
    """gpt_kernels.causal_attention.DTYPES and HEAD_SIZES, what gpt_kernels.unsupported() answers
    from: the kernels take those and refuse every other dtype and head size up to 256."""
    dtypes = gpt_kernels.causal_attention.DTYPES[device]
    check_takes_exactly(dtypes, lambda dtype: ops.causal_attention(*make_qkv(1, 1, 3, 32, device, dtype, False)))
    check_takes_exactly(dtypes, lambda dtype: ops.causal_attention_qkv(
        torch.randn(1, 3, 3 * 64, device=device, dtype=dtype), 2))
    for D in range(1, 257):
        x = torch.randn(1, 1, 2, D, device=device, dtype=dtypes[0])
        if D in gpt_kernels.causal_attention.HEAD_SIZES:
            ops.causal_attention(x, x, x)
            ops.causal_attention_qkv(torch.randn(1, 2, 3 * 2 * D, device=device, dtype=dtypes[0]), 2)
        else:
            check_errors((f"head dimension D = {D} is not supported", ops.causal_attention, x, x, x),
                         (f"head dimension D = {D} is not supported", ops.causal_attention_qkv,
                          torch.randn(1, 2, 3 * 2 * D, device=device, dtype=dtypes[0]), 2))


@pytest.mark.cuda
def test_bad_inputs_cuda():
    q = torch.randn(2, 3, 16, 32, device="cuda", dtype=torch.bfloat16)
    x = q.float()
    check_errors(("must be on the same device", ops.causal_attention, q, q, q.cpu()),
                 ("on CUDA q, k, v must be bfloat16 or float16", ops.causal_attention, x, x, x))


# --- causal_attention_qkv: the same attention read from qkv (B, T, 3C), written as (B, T, C) ------

def split_heads(qkv, n_head):
    """The model's PyTorch-path layout: (B, H, T, D) views of q, k, v."""
    B, T, C3 = qkv.shape
    return [t.view(B, T, n_head, C3 // 3 // n_head).transpose(1, 2) for t in qkv.split(C3 // 3, dim=2)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("T,D,H", [(1, 32, 1), (37, 32, 2), (65, 64, 3), (130, 128, 2)])
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_qkv_op_equals_the_qkv_op_on_views(device, T, D, H, p):
    """Same kernels, same mask, so the same numbers as causal_attention on (B, H, T, D) views,
    forward (out, lse) and backward (the gradient of qkv), whatever the memory layout."""
    dtype = default_dtype(device)
    B, C = 2, H * D
    qkv = torch.randn(B, T, 3 * C, generator=torch.Generator().manual_seed(T)).to(device, dtype).requires_grad_()
    out, lse, rng_state = ops.causal_attention_qkv_forward(qkv, H, p, D ** -0.5, 5)
    assert out.shape == (B, T, C) and out.is_contiguous() and lse.shape == (B, H, T)
    ref_out, ref_lse, _ = ops.causal_attention_forward(*split_heads(qkv, H), p, D ** -0.5, 5)
    torch.testing.assert_close(out, ref_out.transpose(1, 2).reshape(B, T, C), rtol=0, atol=0)
    torch.testing.assert_close(lse, ref_lse, rtol=0, atol=0)
    grad = torch.randn(B, T, C, device=device, dtype=dtype)
    (g,) = torch.autograd.grad(out, qkv, grad)
    (g_ref,) = torch.autograd.grad(ref_out.transpose(1, 2).reshape(B, T, C), qkv, grad)
    assert g.shape == qkv.shape
    exact_or_close(g, g_ref, device)  # CUDA sums dq with atomics: last bits may differ


def test_qkv_op_matches_float64_reference_and_gradcheck():
    B, T, H, D = 2, 19, 2, 32
    qkv = torch.randn(B, T, 3 * H * D, dtype=torch.float64, requires_grad=True)
    out = ops.causal_attention_qkv(qkv, H)
    q, k, v = split_heads(qkv, H)
    expected = reference(q, k, v).transpose(1, 2).reshape(B, T, H * D)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    check_gradcheck(lambda x: ops.causal_attention_qkv_forward(x, H, 0.3, 0.2, 3)[0],
                    torch.randn(1, 9, 3 * H * D, dtype=torch.float64, requires_grad=True))


@pytest.mark.parametrize("device", DEVICES)
def test_qkv_op_opcheck_and_compile(device):
    dtype = default_dtype(device)
    qkv = torch.randn(2, 33, 3 * 64, device=device, dtype=dtype, requires_grad=True)
    x = qkv.detach()
    out, lse, rng_state = ops.causal_attention_qkv_forward(x, 2, 0.3, 0.2, 11)
    check_opcheck((ops.causal_attention_qkv.default, (qkv, 2), {"dropout_p": 0.0, "scale": None}),
                  (ops.causal_attention_qkv_forward, (qkv, 2, 0.3, 0.2, 11)),
                  (ops.causal_attention_qkv_backward, (torch.randn_like(out), x, out, lse, rng_state, 2, 0.3, 0.2)))
    check_compile_matches(lambda t: ops.causal_attention_qkv(t, 2, 0.0) * 2, qkv)


def test_qkv_op_bad_inputs_raise_clear_errors():
    attend, backward = ops.causal_attention_qkv, ops.causal_attention_qkv_backward
    qkv = torch.randn(2, 5, 96)
    out, lse, rng_state = ops.causal_attention_qkv_forward(qkv, 1, 0.0, 0.2)
    check_errors((r"qkv must be 3-D \(B, T, 3C\)", attend, torch.randn(2, 3, 4, 96), 1),
                 ("must be 3 \\* n_head \\* D", attend, torch.randn(2, 3, 100), 2),
                 ("head dimension D = 48 is not supported", attend, torch.randn(2, 3, 3 * 96), 2),
                 ("n_head must be positive", attend, torch.randn(2, 3, 96), 0),
                 (r"dropout_p must be in \[0, 1\)", attend, torch.randn(2, 3, 96), 1, 1.0),
                 ("qkv must be floating point", attend, torch.ones(2, 3, 96, dtype=torch.int64), 1),
                 ("on the CPU q, k, v must be float32 or float64", attend, torch.randn(2, 3, 96, dtype=torch.bfloat16), 1),
                 (r"grad_out and out must be \(B, T, C\)", backward, torch.randn(2, 5, 31), qkv, out, lse, rng_state, 1, 0.0, 0.2),
                 (r"lse must be \(B, n_head, T\)", backward, out, qkv, out, lse[:, :, :4], rng_state, 1, 0.0, 0.2))


def test_backward_writes_every_element_of_dq():
    """dq is not zeroed first: the first key tile covers every query row and writes it (beta = 0).
    Freed NaN-filled blocks of the same size make a missed element show up as NaN (when the
    allocator hands them back)."""
    B, T, H, D = 2, 100, 2, 32
    qkv = torch.randn(B, T, 3 * H * D)
    out, lse, rng_state = ops.causal_attention_qkv_forward(qkv, H, 0.0, D ** -0.5, 1)
    grad = torch.randn(B, T, H * D)
    expected = ops.causal_attention_qkv_backward(grad, qkv, out, lse, rng_state, H, 0.0, D ** -0.5)
    for _ in range(10):
        junk = [torch.full_like(qkv, math.nan) for _ in range(4)]
        del junk
        again = ops.causal_attention_qkv_backward(grad, qkv, out, lse, rng_state, H, 0.0, D ** -0.5)
        assert torch.equal(again, expected)
