"""Smoke test of torch.ops.gpt_kernels.bias_gelu on the GPU: forward and backward, one line a case.

    CUDA_LAUNCH_BLOCKING=1 python bench/smoke/bias_gelu.py              # the GPU
    python bench/smoke/bias_gelu.py --device cpu --tiny                 # the script itself, on the CPU

out = gelu(x + bias) (exact erf GELU); the backward gives grad_x and grad_bias (summed over the
rows). Cases: rows below, at and past the 32-row block of the bias gradient (1, 5, 32, 33, 65,
70), widths below, at and past the 256 threads of a block (1, 7, 9, 13, 100, 257, 1537), float32,
float64, bfloat16 and float16, and inputs starting 1 element past alignment. Reference: the same
formula in float64; on CUDA also the CPU kernel. Tolerances are tests/test_bias_gelu.py's:
rtol per dtype, and for the bias gradient 1e-6 of the sum of |terms| plus the output's rounding.
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Smoke, compare, dtype_name, generator, misaligned, parse_args  # noqa: E402

RTOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 8e-3, torch.float16: 1e-3}
ATOL = {torch.float64: 1e-12, torch.float32: 1e-6, torch.bfloat16: 1e-6, torch.float16: 1e-6}
SUM_TOL = {torch.float64: 1e-12, torch.float32: 1e-6, torch.bfloat16: 1e-6, torch.float16: 1e-6}


def ours(x, bias, grad):
    x = x.detach().requires_grad_()  # detach keeps the storage offset of a misaligned view
    bias = bias.detach().requires_grad_()
    out = torch.ops.gpt_kernels.bias_gelu(x, bias)
    grad_x, grad_bias = torch.autograd.grad(out, (x, bias), grad)
    return out, grad_x, grad_bias


def reference(x, bias, grad):
    xd = x.detach().to("cpu", torch.float64).requires_grad_()
    bd = bias.detach().to("cpu", torch.float64).requires_grad_()
    out = F.gelu(xd + bd)
    grad_x, grad_bias = torch.autograd.grad(out, (xd, bd), grad.cpu().double())
    abs_sum = grad_x.abs().reshape(-1, x.shape[-1]).sum(0)
    return out.detach(), grad_x, grad_bias, abs_sum


def bias_check(name, grad_bias, ref_gb, abs_sum, dtype, slack=1.0):
    """The bias gradient is a sum over rows: its bound grows with the sum of |terms|."""
    ours = grad_bias.detach().cpu().double()
    if not ours.isfinite().all():
        return False, f"{name} non-finite (unwritten, poisoned NaN?)"
    err = (ours - ref_gb).abs()
    allowed = slack * (SUM_TOL[dtype] * abs_sum + RTOL[dtype] * ref_gb.abs() + ATOL[dtype])
    worst = (err / allowed).max().item()
    return worst <= 1.0, f"{name} {err.max().item():.1e} ({worst:.2f} of tol)"


def case(shape, dtype, unaligned, device, seed):
    g = generator(seed)
    x = (torch.randn(shape, generator=g) * 3.0).to(device, dtype)
    bias = torch.randn(shape[-1], generator=g).to(device, dtype)
    grad = torch.randn(shape, generator=g).to(device, dtype)
    if unaligned:
        x, bias, grad = misaligned(x), misaligned(bias), misaligned(grad)
    out, grad_x, grad_bias = ours(x, bias, grad)
    ref_out, ref_gx, ref_gb, abs_sum = reference(x, bias, grad)
    rtol, atol = RTOL[dtype], ATOL[dtype]
    results = [compare("out", out, ref_out, rtol, atol), compare("grad_x", grad_x, ref_gx, rtol, atol),
               bias_check("grad_bias", grad_bias, ref_gb, abs_sum, dtype)]
    if device.type == "cuda":  # the CPU kernel on the same inputs
        c_out, c_gx, c_gb = ours(x.cpu(), bias.cpu(), grad.cpu())
        results += [compare("vs cpu out", out, c_out, 2 * rtol, 2 * atol),
                    compare("vs cpu grad_x", grad_x, c_gx, 2 * rtol, 2 * atol),
                    bias_check("vs cpu grad_bias", grad_bias, c_gb.double(), abs_sum, dtype, slack=2.0)]
    return results


def main():
    args = parse_args(__doc__.splitlines()[0])
    smoke = Smoke("bias_gelu", args)
    dtypes = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
    if args.tiny:
        cases = [((1, 7), torch.float32, False), ((33, 9), torch.bfloat16, False),
                 ((2, 3, 257), torch.float16, True), ((5, 13), torch.float64, False)]
    else:
        shapes = [(1, 1), (1, 7), (5, 13), (32, 9), (33, 9), (2, 3, 257), (65, 100), (70, 1537)]
        cases = [(shape, dtypes[(i + j) % 4], False) for i, shape in enumerate(shapes) for j in range(2)]
        cases += [((33, 9), dtype, True) for dtype in dtypes] + [((70, 1537), torch.bfloat16, True)]
    for k, (shape, dtype, unaligned) in enumerate(cases):
        label = f"{shape} {dtype_name(dtype)}{' unaligned' if unaligned else ''}"
        smoke.run(label, lambda shape=shape, dtype=dtype, u=unaligned, k=k: case(
            shape, dtype, u, smoke.device, args.seed * 1000 + k))
    sys.exit(smoke.finish())


if __name__ == "__main__":
    main()
