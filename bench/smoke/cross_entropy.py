"""Smoke test of torch.ops.gpt_kernels.cross_entropy on the GPU: loss and gradient, one line a case.

    CUDA_LAUNCH_BLOCKING=1 python bench/smoke/cross_entropy.py          # the GPU
    python bench/smoke/cross_entropy.py --device cpu --tiny             # the script itself, on the CPU

Cases: rows N = 1, 5, 37, 130 and 3 (the last at GPT-2's V = 50257), widths V = 1, 3, 1000,
1003 (odd widths past the vector loads), float32, bfloat16 and float16 (and one float64), each
reduction with an upstream gradient other than 1 (so the backward's rescaling kernel runs), an
ignored row, one copy of the logits starting 1 element past alignment, and the in-place variant.
Reference: F.cross_entropy in float64 on the same inputs; on CUDA also the CPU kernel. Tolerances
are tests/test_cross_entropy.py's: rtol, and atol scaled by the largest reference value.
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Smoke, compare, dtype_name, generator, misaligned, parse_args  # noqa: E402

TOL = {torch.float32: (1e-4, 1e-5), torch.bfloat16: (1.6e-2, 1e-2), torch.float16: (2e-3, 1e-3),
       torch.float64: (1e-10, 1e-12)}


def make(n, v, dtype, device, seed):
    g = generator(seed)
    x = (torch.randn(n, v, generator=g) * 3.0).to(dtype)
    t = torch.randint(0, v, (n,), generator=g)
    if n > 4:
        t[3] = -100  # an ignored row among the others
    return x.to(device), t.to(device)


def upstream(reduction, n, seed):
    if reduction == "none":
        return torch.randn(n, generator=generator(seed + 1), dtype=torch.float64)
    return torch.tensor(0.7, dtype=torch.float64)


def loss_and_grad(x, t, reduction, up, inplace=False):
    """Our loss and d(up . loss)/d logits; x is left untouched."""
    import gpt_kernels
    leaf = x.detach().clone().requires_grad_()
    if inplace:  # the gradient is written over a live (non-leaf) copy of the logits
        loss = gpt_kernels.cross_entropy_inplace(leaf.clone(), t, -100, reduction)
    else:
        loss = torch.ops.gpt_kernels.cross_entropy(leaf, t, -100, reduction)
    (grad,) = torch.autograd.grad(loss, leaf, up.to(loss.device, loss.dtype))
    return loss.detach(), grad


def reference(x, t, reduction, up):
    x64 = x.detach().to("cpu", torch.float64).requires_grad_()
    loss = F.cross_entropy(x64, t.cpu(), ignore_index=-100, reduction=reduction)
    (grad,) = torch.autograd.grad(loss, x64, up)
    return loss.detach(), grad


def scaled_tol(dtype, ref):
    rtol, atol = TOL[dtype]
    finite = ref[ref.isfinite()]
    scale = finite.abs().max().item() if finite.numel() else 1.0
    return rtol, atol * max(scale, 1e-30)


def case(x, t, reduction, up, device, inplace=False):
    dtype = x.dtype
    loss, grad = loss_and_grad(x, t, reduction, up, inplace)
    ref_loss, ref_grad = reference(x, t, reduction, up)
    results = [compare("loss", loss, ref_loss, *scaled_tol(dtype, ref_loss)),
               compare("grad", grad, ref_grad, *scaled_tol(dtype, ref_grad))]
    if x.shape[0] > 4:  # the ignored row: zero gradient (and zero loss under "none")
        g3, loss_cpu = grad[3].cpu(), loss.cpu()  # checked on the CPU: no torch kernel on the GPU
        ignored = g3.abs().max().item() == 0 and (reduction != "none" or loss_cpu[3].item() == 0)
        results.append((ignored, "ignored row " + ("0" if ignored else "NOT 0")))
    if device.type == "cuda":  # the CPU kernel on the same inputs
        cpu_loss, cpu_grad = loss_and_grad(x.cpu(), t.cpu(), reduction, up, inplace)
        rtol, atol = scaled_tol(dtype, ref_grad)
        results.append(compare("vs cpu grad", grad, cpu_grad, 2 * rtol, 2 * atol))
        results.append(compare("vs cpu loss", loss, cpu_loss, *scaled_tol(dtype, ref_loss)))
    return results


def main():
    args = parse_args(__doc__.splitlines()[0])
    smoke = Smoke("cross_entropy", args)
    device = smoke.device
    reductions = ["mean", "sum", "none"]
    if args.tiny:
        cases = [(5, 3, torch.float32, "mean", False, False), (37, 1000, torch.bfloat16, "none", False, False),
                 (6, 1003, torch.float16, "sum", True, False), (5, 1000, torch.bfloat16, "mean", False, True)]
    else:
        cases = []
        shapes = [(1, 1), (5, 3), (37, 1000), (130, 1003), (3, 50257)]
        for i, (n, v) in enumerate(shapes):
            for j, dtype in enumerate([torch.float32, torch.bfloat16, torch.float16]):
                cases.append((n, v, dtype, reductions[(i + j) % 3], False, False))
        cases += [(37, 1000, torch.bfloat16, "mean", True, False), (130, 1003, torch.float32, "none", True, False),
                  (130, 1003, torch.bfloat16, "none", False, True), (37, 1000, torch.float32, "sum", False, True),
                  (37, 1000, torch.float64, "mean", False, False)]
    for k, (n, v, dtype, reduction, unaligned, inplace) in enumerate(cases):
        label = (f"{n}x{v} {dtype_name(dtype)} {reduction}"
                 f"{' unaligned' if unaligned else ''}{' inplace' if inplace else ''}")

        def run(n=n, v=v, dtype=dtype, reduction=reduction, unaligned=unaligned, inplace=inplace, k=k):
            x, t = make(n, v, dtype, device, args.seed * 1000 + k)
            if unaligned:
                x = misaligned(x)
            return case(x, t, reduction, upstream(reduction, n, args.seed * 1000 + k), device, inplace)
        smoke.run(label, run)
    sys.exit(smoke.finish())


if __name__ == "__main__":
    main()
