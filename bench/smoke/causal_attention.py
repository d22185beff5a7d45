"""Smoke test of torch.ops.gpt_kernels.causal_attention (and _qkv) on the GPU, one line a case.

    CUDA_LAUNCH_BLOCKING=1 python bench/smoke/causal_attention.py       # the GPU
    python bench/smoke/causal_attention.py --device cpu --tiny          # the script itself, on the CPU

Cases: (B, H, T, D) with T = 1, 7, 64, 65, 300 (partial tiles of 64) and D = 32, 64, 128, in
bfloat16 and float16 on CUDA (float32 on the CPU), dropout 0 and 0.25 (the reference applies the
mask the kernel reports, causal_attention_dropout_mask), a custom scale, and the qkv layout
(causal_attention_qkv: (B, T, 3C) in, (B, T, C) out, the op the model calls). Each checks out,
the saved log-sum-exp and dq, dk, dv against explicit attention in float64; on CUDA also against the CPU kernel run in
float32 on the same (rounded) inputs with the same seed, hence the same mask. Tolerances are
tests/test_causal_attention.py's, on its measure ||ours - ref|| / (||ref|| + sqrt(numel)).
"""
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Smoke, compare, compare_norm, dtype_name, generator, parse_args  # noqa: E402

TOL = {torch.float64: 1e-12, torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 5e-3}
SEED = 1234  # the dropout seed passed to the forward (so the CPU kernel can draw the same mask)


def reference(q, k, v, scale, keep, p):
    """Explicit causal attention in float64 on the CPU, and the rows' log-sum-exp of the scaled
    scores (what the forward saves for the backward); keep: (B, H, T, T) bool or None."""
    q, k, v = (t.detach().to("cpu", torch.float64).requires_grad_() for t in (q, k, v))
    T = q.shape[-2]
    s = (q @ k.transpose(-1, -2)) * scale
    s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    a = s.softmax(-1)
    if keep is not None:
        a = a * keep.cpu() / (1.0 - p)
    return a @ v, (q, k, v), s.detach().logsumexp(-1)


def ours(q, k, v, p, scale):
    """out, the leaf inputs (for the gradients), lse and the mask's rng_state."""
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out, lse, rng_state = torch.ops.gpt_kernels.causal_attention_forward(q, k, v, p, scale, SEED)
    return out, (q, k, v), lse, rng_state


def split_heads(qkv, n_head):
    B, T, C3 = qkv.shape
    return [t.view(B, T, n_head, C3 // 3 // n_head).transpose(1, 2) for t in qkv.split(C3 // 3, dim=2)]


def case_bhtd(B, H, T, D, dtype, p, scale, device, seed):
    g = generator(seed)
    q, k, v = (torch.randn(B, H, T, D, generator=g).to(device, dtype) for _ in range(3))
    grad = torch.randn(B, H, T, D, generator=g).to(device, dtype)
    out, inputs, lse, rng_state = ours(q, k, v, p, scale)
    keep = torch.ops.gpt_kernels.causal_attention_dropout_mask(B, H, T, p, rng_state) if p > 0 else None
    ref, ref_inputs, ref_lse = reference(q, k, v, scale, keep, p)
    tol = TOL[dtype]
    # lse is fp32 (fp64 for fp64) from the same rounded inputs: far tighter than the outputs
    results = [compare_norm("out", out, ref, tol), compare("lse", lse, ref_lse, 1e-4, 1e-4)]
    grads = torch.autograd.grad(out, inputs, grad)
    ref_grads = torch.autograd.grad(ref, ref_inputs, grad.cpu().double())
    results += [compare_norm(f"d{n}", a, b, 2 * tol) for n, a, b in zip("qkv", grads, ref_grads)]
    if device.type == "cuda":  # the CPU kernel, fp32, same inputs and seed: the same mask
        c_out, c_inputs, _, c_rng = ours(q.cpu().float(), k.cpu().float(), v.cpu().float(), p, scale)
        same_mask = torch.equal(c_rng, rng_state.cpu())
        results.append((same_mask, "rng_state " + ("= cpu" if same_mask else "!= cpu")))
        results.append(compare_norm("vs cpu out", out, c_out, tol))
        c_grads = torch.autograd.grad(c_out, c_inputs, grad.cpu().float())
        results += [compare_norm(f"vs cpu d{n}", a, b, 2 * tol) for n, a, b in zip("qkv", grads, c_grads)]
    return results


def case_qkv(B, T, H, D, dtype, p, device, seed):
    g = generator(seed)
    C = H * D
    qkv = torch.randn(B, T, 3 * C, generator=g).to(device, dtype).requires_grad_()
    grad = torch.randn(B, T, C, generator=g).to(device, dtype)
    scale = D ** -0.5
    out, lse, rng_state = torch.ops.gpt_kernels.causal_attention_qkv_forward(qkv, H, p, scale, SEED)
    keep = torch.ops.gpt_kernels.causal_attention_dropout_mask(B, H, T, p, rng_state) if p > 0 else None
    q, k, v = split_heads(qkv.detach(), H)
    ref, ref_inputs, ref_lse = reference(q, k, v, scale, keep, p)
    ref = ref.transpose(1, 2).reshape(B, T, C)
    (g_qkv,) = torch.autograd.grad(out, qkv, grad)
    ref_g = torch.autograd.grad(ref, ref_inputs, grad.cpu().double())
    # the reference's dq, dk, dv back in the (B, T, 3C) layout of qkv
    ref_g_qkv = torch.cat([t.transpose(1, 2).reshape(B, T, C) for t in ref_g], dim=2)
    tol = TOL[dtype]
    return [compare_norm("out", out, ref, tol), compare("lse", lse, ref_lse, 1e-4, 1e-4),
            compare_norm("dqkv", g_qkv, ref_g_qkv, 2 * tol)]


def main():
    args = parse_args(__doc__.splitlines()[0])
    smoke = Smoke("causal_attention", args)
    device = smoke.device
    dtypes = [torch.bfloat16, torch.float16] if device.type == "cuda" else [torch.float32]
    if args.tiny:
        bhtd = [(1, 2, 7, 64, 0.25, None), (1, 1, 65, 128, 0.0, None), (1, 1, 65, 32, 0.0, 0.3)]
        qkv = [(1, 65, 2, 64, 0.1)]
    else:
        bhtd = [(2, 3, 1, 64, 0.0, None), (2, 3, 7, 32, 0.0, None), (1, 2, 64, 64, 0.0, None),
                (2, 2, 65, 128, 0.0, None), (1, 2, 300, 64, 0.0, None), (1, 1, 300, 128, 0.0, None),
                (2, 2, 7, 64, 0.25, None), (2, 2, 65, 64, 0.25, None), (1, 2, 300, 32, 0.25, None),
                (1, 2, 65, 64, 0.0, 0.3)]
        qkv = [(2, 1, 1, 32, 0.0), (2, 37, 2, 32, 0.3), (2, 65, 3, 64, 0.0), (2, 130, 2, 128, 0.3)]
    k = 0
    for i, (B, H, T, D, p, scale) in enumerate(bhtd):
        for j, dtype in enumerate(dtypes):
            if args.tiny and len(dtypes) > 1 and (i + j) % 2:
                continue  # tiny: each shape in one dtype, the dtypes alternating
            k += 1
            label = f"({B},{H},{T},{D}) {dtype_name(dtype)} p={p}{f' scale={scale}' if scale else ''}"
            smoke.run(label, lambda B=B, H=H, T=T, D=D, dtype=dtype, p=p, scale=scale, k=k: case_bhtd(
                B, H, T, D, dtype, p, scale or 1 / math.sqrt(D), device, args.seed * 1000 + k))
    for i, (B, T, H, D, p) in enumerate(qkv):
        for j, dtype in enumerate(dtypes):
            if args.tiny and j > 0:
                continue
            k += 1
            label = f"qkv B={B} T={T} H={H} D={D} {dtype_name(dtype)} p={p}"
            smoke.run(label, lambda B=B, T=T, H=H, D=D, dtype=dtype, p=p, k=k: case_qkv(
                B, T, H, D, dtype, p, device, args.seed * 1000 + k))
    sys.exit(smoke.finish())


if __name__ == "__main__":
    main()
