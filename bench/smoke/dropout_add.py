"""Smoke test of torch.ops.gpt_kernels.dropout_add on the GPU: forward and backward, one line a case.

    CUDA_LAUNCH_BLOCKING=1 python bench/smoke/dropout_add.py            # the GPU
    python bench/smoke/dropout_add.py --device cpu --tiny               # the script itself, on the CPU

out = residual + dropout(x, p). Cases: sizes 1, 7, 8, 65 and (3, 5, 67), (32, 17, 24) (below, at
and past the 8-element Philox group and the 16-byte vectors), every (x, residual) dtype pair the
CUDA kernels take, p = 0, 0.1, 0.5, no residual (embedding dropout), and inputs starting 1
element past alignment (the scalar path). Reference: the same formula in float64 with the mask
the kernel reports (dropout_add_mask); the residual's gradient must be grad_out itself. On CUDA
also the CPU kernel with the same seed (the same mask), for the pairs the CPU takes. Tolerances
are tests/test_dropout_add.py's: one rounding of the output dtype.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Smoke, compare, dtype_name, generator, misaligned, parse_args  # noqa: E402

TOL = {torch.float64: 1e-12, torch.float32: 1e-6, torch.bfloat16: 8e-3, torch.float16: 1e-3}
SEED = 1234
CUDA_PAIRS = [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16), (torch.float16, torch.float16),
              (torch.bfloat16, torch.float32), (torch.float16, torch.float32), (torch.float64, torch.float64)]
CPU_PAIRS = [(torch.float32, torch.float32), (torch.float64, torch.float64),
             (torch.bfloat16, torch.bfloat16), (torch.bfloat16, torch.float32)]


def ours(x, residual, grad, p):
    """out, grad_x, grad_residual (None without a residual), rng_state."""
    x = x.detach().requires_grad_()  # detach keeps the storage offset of a misaligned view
    res = None if residual is None else residual.detach().requires_grad_()
    out, rng_state = torch.ops.gpt_kernels.dropout_add_forward(x, res, p, SEED)
    grads = torch.autograd.grad(out, (x,) if res is None else (x, res), grad)
    return out, grads[0], (grads[1] if res is not None else None), rng_state


def case(shape, x_dtype, r_dtype, p, with_residual, unaligned, device, seed):
    g = generator(seed)
    x = torch.randn(shape, generator=g).to(device, x_dtype)
    residual = torch.randn(shape, generator=g).to(device, r_dtype) if with_residual else None
    out_dtype = r_dtype if with_residual else x_dtype
    grad = torch.randn(shape, generator=g).to(device, out_dtype)
    if unaligned:
        x = misaligned(x)
        residual = misaligned(residual) if residual is not None else None
    out, grad_x, grad_res, rng_state = ours(x, residual, grad, p)
    keep = torch.ops.gpt_kernels.dropout_add_mask(x.numel(), p, rng_state).view(shape)
    if p == 0 and not keep.all():
        return [(False, "p = 0 but the mask drops elements")]
    ref = x.detach().cpu().double() * keep / (1.0 - p)
    if residual is not None:
        ref = ref + residual.detach().cpu().double()
    ref_gx = grad.cpu().double() * keep / (1.0 - p)
    ok_dtype = out.dtype == out_dtype and grad_x.dtype == x_dtype
    results = [(ok_dtype, f"dtypes {'ok' if ok_dtype else f'WRONG out {out.dtype} grad_x {grad_x.dtype}'}"),
               compare("out", out, ref, TOL[out_dtype], TOL[out_dtype]),
               compare("grad_x", grad_x, ref_gx, TOL[x_dtype], TOL[x_dtype])]
    if grad_res is not None:
        same = torch.equal(grad_res.cpu(), grad.cpu())
        results.append((same, "grad_residual " + ("= grad_out" if same else "!= grad_out")))
    if device.type == "cuda" and (x_dtype, r_dtype) in CPU_PAIRS:
        c_out, c_gx, _, c_rng = ours(x.cpu(), None if residual is None else residual.cpu(), grad.cpu(), p)
        same_mask = torch.equal(c_rng, rng_state.cpu())
        results.append((same_mask, "rng_state " + ("= cpu" if same_mask else "!= cpu")))
        results.append(compare("vs cpu out", out, c_out, 2 * TOL[out_dtype], 2 * TOL[out_dtype]))
        results.append(compare("vs cpu grad_x", grad_x, c_gx, 2 * TOL[x_dtype], 2 * TOL[x_dtype]))
    return results


def main():
    args = parse_args(__doc__.splitlines()[0])
    smoke = Smoke("dropout_add", args)
    device = smoke.device
    pairs = CUDA_PAIRS if device.type == "cuda" else CPU_PAIRS
    if args.tiny:  # (shape, pair index, p, residual, unaligned)
        cases = [((65,), 0, 0.1, True, False), ((3, 5, 67), 3, 0.5, True, True),
                 ((7,), 1, 0.0, False, False), ((8,), 2 % len(pairs), 0.1, True, False)]
    else:
        shapes = [(1,), (7,), (8,), (65,), (3, 5, 67), (32, 17, 24)]
        cases = []
        for i, shape in enumerate(shapes):
            for j in range(len(pairs)):
                cases.append((shape, j, [0.0, 0.1, 0.5][(i + j) % 3], True, False))
        cases += [((3, 5, 67), j, 0.1, True, True) for j in range(len(pairs))]
        cases += [((65,), 0, 0.1, False, False), ((32, 17, 24), 1, 0.5, False, True)]
    for k, (shape, j, p, with_residual, unaligned) in enumerate(cases):
        x_dtype, r_dtype = pairs[j]
        label = (f"{shape} {dtype_name(x_dtype)}+{dtype_name(r_dtype) if with_residual else 'none'} p={p}"
                 f"{' unaligned' if unaligned else ''}")
        smoke.run(label, lambda shape=shape, x_dtype=x_dtype, r_dtype=r_dtype, p=p, w=with_residual,
                  u=unaligned, k=k: case(shape, x_dtype, r_dtype, p, w, u, device, args.seed * 1000 + k))
    sys.exit(smoke.finish())


if __name__ == "__main__":
    main()
