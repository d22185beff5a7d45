"""Every CUDA kernel of every op (csrc/cuda/*.cu, built from this working tree) run on the CPU
under the emulator (tests/cuda_emu), called through the same launch functions as the CUDA
launchers, and compared with the CPU kernel of the same op (torch.ops.gpt_kernels.* on the CPU,
same Philox mask for dropout) and with a float64 reference.

Each run is race-checked: the kernels run under four thread/block schedules
(cuda_emu.SCHEDULES) whose results must agree bit for bit (dq of attention, summed with float
atomics from several blocks, to one ulp of its dtype when the block order changes), with every
buffer between guard pages (an out-of-bounds access fails the test naming the kernel, buffer
and index), outputs and shared memory filled with NaN (at the start of every block), and
16-byte accesses checked for alignment.

Tolerances, per dtype of the kernel's inputs and outputs (fp32 arithmetic inside for the 16-bit
types, fp64 for fp64):
  elementwise ops (cross_entropy loss and gradients, dropout_add, bias_gelu), via
  torch.testing.assert_close(ours, expected, rtol, atol * max|expected|):
    float64   rtol 1e-12, atol 1e-12   (same formulas, different summation order)
    float32   rtol 1e-5,  atol 1e-6    (libm exp2/log vs the CPU's polynomials: a few ulp)
    bfloat16  rtol 1.6e-2, atol 1e-2   (outputs rounded to 8 bits: one ulp is 2^-8 relative, and
                                        the CPU and the emulator may round a tie differently)
    float16   rtol 2e-3,  atol 1e-3    (11 bits)
  the bias gradient (a sum over rows): |error| <= rtol (sum_r |grad_x[r, c]| + |expected|) +
  atol * max_c sum_r |grad_x[r, c]|, with the rtol and atol above
  causal attention (bf16/fp16 only on CUDA), as tests/test_causal_attention.py measures it,
  ||ours - ref|| / (||ref|| + sqrt(numel)): bfloat16 2e-2, float16 5e-3 for out, and twice that
  for dq, dk, dv; lse (fp32) within 1e-4 of the CPU's and 2e-3 of the float64 reference.
The CPU kernel of attention takes float32 only, so it runs on the 16-bit inputs widened to
float32; the same tolerances hold for that comparison.
"""
import math

import pytest
import torch

import cuda_emu
import gpt_kernels  # noqa: F401

ops = torch.ops.gpt_kernels
pytestmark = [pytest.mark.emulated,
              pytest.mark.skipif(cuda_emu.unavailable() is not None, reason=str(cuda_emu.unavailable()))]

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
TOL = {torch.float64: (1e-12, 1e-12), torch.float32: (1e-5, 1e-6), torch.bfloat16: (1.6e-2, 1e-2),
       torch.float16: (2e-3, 1e-3)}
ATTN_TOL = {torch.bfloat16: 2e-2, torch.float16: 5e-3}


@pytest.fixture(scope="module")
def libs():
    return cuda_emu.load_all()


def close(actual, expected, dtype, what=""):
    rtol, atol = TOL[dtype]
    expected = expected.double()
    scale = expected[expected.isfinite()].abs().max().item() if expected.isfinite().any() else 1.0
    torch.testing.assert_close(actual.double(), expected, rtol=rtol, atol=atol * max(scale, 1e-30),
                               equal_nan=True, msg=lambda m: f"{what}: {m}")


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# cross_entropy: ce_count, ce_forward (128/256/512 threads), ce_finalize, ce_scale

# V picks the block size (128, 256, 512 threads by 16-byte vectors per row) for each element size
CE_SHAPES = [(1, 1), (3, 7), (5, 64), (4, 37), (4, 400), (6, 600), (6, 1031), (3, 1500), (3, 4100), (70, 5)]


def ce_inputs(N, V, dtype, seed, ignore_rows=(1,)):
    g = gen(seed)
    x = (torch.randn(N, V, generator=g) * 3).to(dtype)
    t = torch.randint(0, V, (N,), generator=g)
    for r in ignore_rows:
        if r < N:
            t[r] = -100
    return x, t


def ce_reference(x, t, reduction):
    xd = x.double().requires_grad_()
    loss = torch.nn.functional.cross_entropy(xd, t, ignore_index=-100, reduction=reduction)
    (g,) = torch.autograd.grad(loss.sum(), xd)
    return loss.detach(), g


def ce_loss(r, reduction):
    return r["row_loss"] if reduction == "none" else r["out"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,V", CE_SHAPES)
def test_cross_entropy_forward_mean(libs, dtype, N, V):
    lib = libs["cross_entropy"]
    x, t = ce_inputs(N, V, dtype, seed=N * 1000 + V)
    r = cuda_emu.race_checked(lambda: cuda_emu.ce_forward(lib, x, t, -100, "mean", True), lib)
    loss_cpu, grad_cpu = ops.cross_entropy_fwd(x, t, -100, "mean", True)
    close(r["out"], loss_cpu, dtype, "loss vs CPU")
    close(r["grad"], grad_cpu, dtype, "grad vs CPU")
    loss_ref, grad_ref = ce_reference(x, t, "mean")
    close(r["out"], loss_ref, dtype, "loss vs float64")
    close(r["grad"], grad_ref, dtype, "grad vs float64")
    assert r["bad"].item() == 0 and r["valid"].item() == int((t != -100).sum())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["sum", "none"])
@pytest.mark.parametrize("N,V", [(4, 37), (6, 1031)])
def test_cross_entropy_forward_sum_none(libs, dtype, reduction, N, V):
    lib = libs["cross_entropy"]
    x, t = ce_inputs(N, V, dtype, seed=V, ignore_rows=(0, 2))
    r = cuda_emu.race_checked(lambda: cuda_emu.ce_forward(lib, x, t, -100, reduction, True), lib)
    loss_cpu, grad_cpu = ops.cross_entropy_fwd(x, t, -100, reduction, True)
    close(ce_loss(r, reduction), loss_cpu, dtype, "loss vs CPU")
    close(r["grad"], grad_cpu, dtype, "grad vs CPU")
    loss_ref, grad_ref = ce_reference(x, t, reduction)
    close(ce_loss(r, reduction), loss_ref, dtype, "loss vs float64")
    if reduction == "sum":
        close(r["grad"], grad_ref, dtype, "grad vs float64")
    assert torch.equal(r["grad"][0], torch.zeros(V, dtype=dtype))  # ignored rows: exactly 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["inplace", "loss_only"])
def test_cross_entropy_inplace_and_loss_only(libs, dtype, mode):
    lib = libs["cross_entropy"]
    x, t = ce_inputs(5, 1031, dtype, seed=3)
    inplace = mode == "inplace"
    r = cuda_emu.race_checked(lambda: cuda_emu.ce_forward(lib, x, t, -100, "mean", inplace, inplace=inplace), lib)
    loss_cpu, grad_cpu = ops.cross_entropy_fwd(x, t, -100, "mean", True)
    close(r["out"], loss_cpu, dtype, "loss vs CPU")
    if mode == "inplace":
        close(r["grad"], grad_cpu, dtype, "grad (written over the logits) vs CPU")
    else:
        assert r["grad"] is None


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_targets_out_of_range(libs, dtype):
    """A row whose target is outside [0, V) gets a nan loss and gradient (never a read outside
    the row, which the memory check would report) and is counted for the launcher's error."""
    lib = libs["cross_entropy"]
    x, t = ce_inputs(6, 37, dtype, seed=5)
    t[2], t[4] = 37, -5
    r = cuda_emu.race_checked(lambda: cuda_emu.ce_forward(lib, x, t, -100, "none", True), lib)
    assert r["bad"].item() == 2
    assert r["row_loss"][[2, 4]].isnan().all() and r["grad"][[2, 4]].isnan().all()
    ok = torch.tensor([0, 3, 5])
    loss_ref, _ = ce_reference(x[ok], t[ok], "none")
    close(r["row_loss"][ok], loss_ref, dtype, "valid rows vs float64")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["minus_inf", "large", "all_ignored", "ignore_a_class"])
def test_cross_entropy_special_values(libs, dtype, case):
    """-inf logits (the online softmax's reference point), large magnitudes, every row ignored
    (mean = 0/0 = nan, zero gradient), an ignore_index that is a valid class."""
    lib = libs["cross_entropy"]
    x, t = ce_inputs(6, 37, dtype, seed=11)
    ignore_index = -100
    if case == "minus_inf":
        x[0, :20] = float("-inf")
        x[3, 5:] = float("-inf")
        t[0], t[3] = 25, 2
    elif case == "large":
        x = (x.float() * 3000).to(dtype)
    elif case == "all_ignored":
        t[:] = -100
    else:
        ignore_index = 3
        t[1] = 0  # ce_inputs ignored it with -100
        t[0] = t[4] = 3
    for reduction in ("mean", "none"):
        r = cuda_emu.race_checked(lambda: cuda_emu.ce_forward(lib, x, t, ignore_index, reduction, True), lib)
        loss_cpu, grad_cpu = ops.cross_entropy_fwd(x, t, ignore_index, reduction, True)
        close(ce_loss(r, reduction), loss_cpu, dtype, f"{reduction} loss vs CPU")
        close(r["grad"], grad_cpu, dtype, f"{reduction} grad vs CPU")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction,upstream", [("mean", 1.0), ("mean", 65536.0), ("sum", 0.5), ("none", None)])
@pytest.mark.parametrize("N,V", [(4, 37), (3, 4100)])
def test_cross_entropy_regrad(libs, dtype, reduction, upstream, N, V):
    """The 16-bit backward (ce_forward_kernel in regrad mode): rows whose upstream factor is not
    exactly 1 recomputed from the logits and rounded once; the others keep the forward's
    gradient. Compared with the CPU kernel (cross_entropy_regrad_) on the same gradient."""
    lib = libs["cross_entropy"]
    x, t = ce_inputs(N, V, dtype, seed=N * V)
    grad = cuda_emu.ce_forward(lib, x, t, -100, reduction, True)["grad"]
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    if upstream is None:  # per row, one of them exactly 1
        grad_loss = torch.rand(N, generator=gen(2)).to(acc) * 100
        grad_loss[N // 2] = 1.0
    else:
        grad_loss = torch.tensor(upstream, dtype=acc)
    r = cuda_emu.race_checked(lambda: cuda_emu.ce_regrad(lib, grad, x, grad_loss, t, -100, reduction), lib)
    expected = grad.clone()
    ops.cross_entropy_regrad_(expected, x, grad_loss, t, -100, reduction)
    close(r["grad"], expected, dtype, "regrad vs CPU")
    _, g64 = ce_reference(x, t, "sum" if reduction == "none" else reduction)
    factor = grad_loss.double().reshape(-1, 1) if reduction == "none" else grad_loss.double()
    close(r["grad"], g64 * factor, dtype, "regrad vs float64")
    if upstream == 1.0:
        assert torch.equal(r["grad"], grad)  # untouched: the kernel returns at once


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction,upstream", [("mean", 1.0), ("mean", 0.5), ("sum", 2.5), ("none", None)])
@pytest.mark.parametrize("N,V", [(4, 37), (6, 1031)])
def test_cross_entropy_scale_grad(libs, dtype, reduction, upstream, N, V):
    """The backward kernel: the forward's gradient scaled in place by the upstream gradient
    (skipped where it is exactly 1), compared with the CPU kernel on the same gradient."""
    lib = libs["cross_entropy"]
    x, t = ce_inputs(N, V, dtype, seed=N + V)
    grad = cuda_emu.ce_forward(lib, x, t, -100, reduction, True)["grad"]
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    grad_loss = (torch.rand(N, generator=gen(1)).to(acc) + 0.5) if upstream is None else torch.tensor(upstream, dtype=acc)
    r = cuda_emu.race_checked(lambda: cuda_emu.ce_scale_grad(lib, grad, grad_loss, t, -100, reduction), lib)
    expected = grad.clone()
    ops.cross_entropy_scale_grad_(expected, grad_loss.to(dtype) if reduction != "none" else grad_loss.to(dtype),
                                  t, -100, reduction)
    close(r["grad"], expected, dtype, "scaled grad vs CPU")
    factor = grad_loss.double().reshape(-1, 1) if reduction == "none" else grad_loss.double()
    close(r["grad"], grad.double() * factor, dtype, "scaled grad vs float64")
    if upstream == 1.0:
        assert torch.equal(r["grad"], grad)


# ---------------------------------------------------------------------------------------------
# dropout_add: one kernel, aligned (16-byte groups) and unaligned paths, the dtype pairs of
# csrc/dropout_add.h

FWD_PAIRS = [(torch.float32, torch.float32), (torch.float64, torch.float64), (torch.float16, torch.float16),
             (torch.bfloat16, torch.bfloat16), (torch.bfloat16, torch.float32), (torch.float16, torch.float32)]


def offset_view(n, dtype, offset, seed):
    """n elements at storage offset `offset` (1: not 16-byte aligned)."""
    return torch.randn(n + offset, generator=gen(seed)).to(dtype)[offset:]


@pytest.mark.parametrize("x_dtype,out_dtype", FWD_PAIRS)
@pytest.mark.parametrize("n", [1, 7, 1001, 5000])
@pytest.mark.parametrize("p", [0.0, 0.3])
@pytest.mark.parametrize("offset", [0, 1])
def test_dropout_add_forward(libs, x_dtype, out_dtype, n, p, offset):
    lib = libs["dropout_add"]
    x = offset_view(n, x_dtype, offset, seed=n)
    residual = offset_view(n, out_dtype, offset, seed=n + 1)
    out_cpu, rng = ops.dropout_add_forward(x, residual, p, 1234 + n)
    seed, off = (int(v) for v in rng)
    r = cuda_emu.race_checked(lambda: cuda_emu.dropout_add(lib, x, residual, p, seed, off), lib)["out"]
    assert r.dtype == out_dtype
    close(r, out_cpu, out_dtype, "vs CPU")
    keep = ops.dropout_add_mask(n, p, rng) if p > 0 else torch.ones(n, dtype=torch.bool)
    close(r, residual.double() + x.double() * keep / (1 - p), out_dtype, "vs float64")
    if x_dtype == out_dtype:  # no residual: dropout(x), the same zeros as the CPU's
        r0 = cuda_emu.race_checked(lambda: cuda_emu.dropout_add(lib, x, None, p, seed, off), lib)["out"]
        out0, _ = ops.dropout_add_forward(x, None, p, 1234 + n)
        assert torch.equal(r0 == 0, out0 == 0)
        close(r0, out0, out_dtype, "no residual vs CPU")


@pytest.mark.parametrize("grad_dtype,x_dtype", [(torch.float32, torch.bfloat16), (torch.float32, torch.float16)] +
                         [(d, d) for d in DTYPES])
@pytest.mark.parametrize("n", [7, 5000])
@pytest.mark.parametrize("offset", [0, 1])
def test_dropout_add_backward(libs, grad_dtype, x_dtype, n, offset):
    lib = libs["dropout_add"]
    p = 0.25
    g = offset_view(n, grad_dtype, offset, seed=n)
    rng = torch.tensor([777 + n, 3], dtype=torch.int64)
    expected = ops.dropout_add_backward(g, rng, p, x_dtype)
    r = cuda_emu.race_checked(lambda: cuda_emu.dropout_add(lib, g, None, p, 777 + n, 3, dst_dtype=x_dtype,
                                                           backward=True), lib)["out"]
    assert r.dtype == x_dtype
    close(r, expected, x_dtype, "vs CPU")
    keep = ops.dropout_add_mask(n, p, rng)
    close(r, g.double() * keep / (1 - p), x_dtype, "vs float64")


# ---------------------------------------------------------------------------------------------
# bias_gelu: forward, backward (grad_x and the per-32-row partial sums), the bias-gradient
# reduction

def gelu_reference(x, bias, grad_out, approximate="none"):
    u = x.double() + bias.double()
    if approximate == "tanh":
        c = math.sqrt(2 / math.pi)
        th = torch.tanh(c * (u + 0.044715 * u ** 3))
        out = 0.5 * u * (1 + th)
        d = 0.5 * (1 + th) + 0.5 * u * (1 - th * th) * c * (1 + 3 * 0.044715 * u * u)
    else:
        phi2 = torch.erfc(-u / math.sqrt(2))
        out = 0.5 * u * phi2
        d = 0.5 * phi2 + u * torch.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)
    gx = grad_out.double() * d
    return out, gx, gx.reshape(-1, x.shape[-1]).sum(0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (50,), (7, 33), (70, 300), (33, 256), (2, 5, 40), (3, 1100)])
@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_bias_gelu(libs, dtype, shape, offset, approximate):
    """The exact (erf) GELU and its tanh approximation, forward and backward."""
    lib = libs["bias_gelu"]
    n = shape[-1]
    numel = math.prod(shape)
    x = (offset_view(numel, torch.float32, offset, seed=numel) * 2.5).to(dtype).view(shape)
    bias = offset_view(n, dtype, offset, seed=n)
    go = offset_view(numel, dtype, offset, seed=numel + 1).view(shape)
    out = cuda_emu.race_checked(lambda: cuda_emu.bias_gelu(lib, x, bias, approximate=approximate), lib)["out"]
    close(out, ops.bias_gelu(x, bias, approximate), dtype, "out vs CPU")
    out_ref, gx_ref, gb_ref = gelu_reference(x, bias, go, approximate)
    close(out, out_ref, dtype, "out vs float64")
    r = cuda_emu.race_checked(lambda: cuda_emu.bias_gelu(lib, x, bias, go, approximate), lib)
    gx_cpu, gb_cpu = ops.bias_gelu_backward(go, x, bias, approximate)
    close(r["grad_x"], gx_cpu, dtype, "grad_x vs CPU")
    close(r["grad_x"], gx_ref, dtype, "grad_x vs float64")
    # the bias gradient sums rows: error relative to the sum of magnitudes (plus atol * the
    # largest, for the values that round into the 16-bit types' subnormals)
    rtol, atol = TOL[dtype]
    abs_sum = gx_ref.abs().reshape(-1, n).sum(0)
    for name, expected in (("CPU", gb_cpu.double()), ("float64", gb_ref)):
        err = (r["grad_bias"].double() - expected).abs()
        allowed = rtol * abs_sum + rtol * expected.abs() + atol * abs_sum.max()
        assert (err <= allowed).all(), f"grad_bias vs {name}: {err.max()}"


# ---------------------------------------------------------------------------------------------
# causal attention: forward (WMMA, online softmax, dropout), backward delta, main and dq kernels

def attn_reference(q, k, v, scale, keep, p):
    q, k, v = q.double(), k.double(), v.double()
    T = q.shape[-2]
    s = (q @ k.transpose(-1, -2)) * scale
    s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    lse = torch.logsumexp(s, -1)
    a = s.softmax(-1)
    if keep is not None:
        a = a * keep / (1.0 - p)
    return a @ v, lse


def rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / (b.norm() + math.sqrt(b.numel()))).item()


def attn_inputs(B, H, T, D, dtype, seed, strided):
    g = gen(seed)
    if strided:  # as the model makes them: views of the (B, T, 3C) projection (row stride 3C)
        qkv = torch.randn(B, T, 3, H, D, generator=g).to(dtype)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
    else:
        q, k, v = (torch.randn(B, H, T, D, generator=g).to(dtype) for _ in range(3))
    return q, k, v


def check_attention(lib, B, H, T, D, dtype, p, strided, seed, scale=None):
    """Forward and backward kernels against the CPU kernel and the float64 reference."""
    q, k, v = attn_inputs(B, H, T, D, dtype, seed=seed, strided=strided)
    if strided:
        assert not q.is_contiguous()
    scale = 1 / math.sqrt(D) if scale is None else scale
    out_cpu, lse_cpu, rng = ops.causal_attention_forward(q.float(), k.float(), v.float(), p, scale, 4321 + T)
    seed, off = (int(x) for x in rng)
    fwd = cuda_emu.race_checked(lambda: cuda_emu.attention_forward(lib, q, k, v, p, scale, seed, off), lib)
    out, lse = fwd["out"], fwd["lse"]
    keep = ops.causal_attention_dropout_mask(B, H, T, p, rng) if p > 0 else None
    qd, kd, vd = (t.double().requires_grad_() for t in (q, k, v))
    ref, lse_ref = attn_reference(qd, kd, vd, scale, keep, p)
    tol = ATTN_TOL[dtype]
    assert rel_err(out, out_cpu) < tol, "out vs CPU"
    assert rel_err(out, ref) < tol, "out vs float64"
    assert (lse - lse_cpu).abs().max().item() < 1e-4, "lse vs CPU"
    assert (lse.double() - lse_ref).abs().max().item() < 2e-3, "lse vs float64"

    go = torch.randn(B, H, T, D, generator=gen(T + D)).to(dtype)
    bwd = cuda_emu.race_checked(lambda: cuda_emu.attention_backward(lib, go, q, k, v, out, lse, p, scale, seed, off),
                                lib, order_dependent={"dq"})
    grads_cpu = ops.causal_attention_backward(go.float(), q.float(), k.float(), v.float(), out.float(), lse, rng,
                                              p, scale)
    grads_ref = torch.autograd.grad(ref, (qd, kd, vd), go.double())
    for name, cpu, r64 in zip(("dq", "dk", "dv"), grads_cpu, grads_ref):
        assert bwd[name].dtype == dtype
        assert rel_err(bwd[name], cpu) < 2 * tol, f"{name} vs CPU"
        assert rel_err(bwd[name], r64) < 2 * tol, f"{name} vs float64"
    delta_ref = (go.double() * out.double()).sum(-1)
    assert (bwd["delta"].double() - delta_ref).abs().max().item() < 1e-4 * (1 + delta_ref.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("D", [32, 64, 128])
@pytest.mark.parametrize("T", [1, 7, 65, 300])
@pytest.mark.parametrize("p", [0.0, 0.2])
def test_causal_attention(libs, dtype, D, T, p):
    """Partial tiles (T = 1, 7, 65, 300), every head size, dropout off and on; T = 65 reads q,
    k, v as strided views of the (B, T, 3C) projection."""
    B, H = (2, 3) if T <= 65 else (1, 1)
    check_attention(libs["causal_attention"], B, H, T, D, dtype, p, strided=T == 65, seed=T * 1000 + D)


@pytest.mark.parametrize("B,H,T,D,p,dtype", [(1, 1, 1, 32, 0.0, torch.bfloat16), (1, 2, 7, 32, 0.0, torch.bfloat16),
                                             (1, 1, 65, 32, 0.3, torch.bfloat16), (1, 1, 130, 64, 0.0, torch.bfloat16),
                                             (1, 1, 130, 32, 0.2, torch.bfloat16), (1, 1, 70, 32, 0.0, torch.float16),
                                             (2, 2, 64, 64, 0.1, torch.bfloat16), (1, 1, 128, 32, 0.0, torch.float16)])
def test_causal_attention_more_shapes(libs, B, H, T, D, p, dtype):
    """Whole tiles (T = 64, 128), two and three tiles, one query row, fp16; among them the cases
    of tools/emulate_attention_cuda.py (a numpy replay of these kernels, retired)."""
    check_attention(libs["causal_attention"], B, H, T, D, dtype, p, strided=False, seed=T + D)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_causal_attention_custom_scale_and_heads(libs, dtype):
    """A scale other than 1/sqrt(D), several heads and batches, dropout: the (b*H + h) index of
    the mask and the per-head strides over three query tiles."""
    check_attention(libs["causal_attention"], 2, 3, 130, 64, dtype, 0.3, strided=True, seed=9, scale=0.3)
