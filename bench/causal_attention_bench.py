"""Causal attention side by side: explicit PyTorch, F.scaled_dot_product_attention, ours.

    python bench/causal_attention_bench.py                 # the default device (cuda if present, else cpu)
    python bench/causal_attention_bench.py --device cpu --quick

For each shape (B, H, T, D), mode (forward; forward+backward) and dropout (0, 0.1):
  explicit   softmax(q k^T / sqrt(D) masked) @ v, nanoGPT's manual path (materialises T x T)
  sdpa       F.scaled_dot_product_attention(is_causal=True), torch's own backend choice
  sdpa-<b>   the same forced to each backend that accepts the case (flash, efficient, cudnn,
             math; on the CPU flash and math)
  ours       torch.ops.gpt_kernels.causal_attention
Columns: median ms; achieved GFLOP/s counting causal FLOPs only (forward 2*B*H*T*T*D, i.e. two
gemms over half of the T x T scores; backward 2.5x the forward); speed-up of ours-and-others
relative to sdpa and to explicit in the same run (x > 1 means faster than them), that rate as
a fraction of the matmul rate measured in the same run; peak memory allocated above the inputs.
Without the extension, ours is left out, saying so. Default shape (32, 6, 256, 64) (the default model: B=32, T=256,
6 heads of 64); on CUDA also (8, 12, 1024, 64) and (4, 16, 2048, 128). CPU: fp32; CUDA: bf16.
Results: bench/results/causal_attention_bench[_quick]_<device>.json and .md.
"""
import argparse
import math

import torch
import torch.nn.functional as F

import common

OP = "causal_attention"  # torch.ops.gpt_kernels.causal_attention; bench/run_all.sh finds this bench by it
REPS = {"cpu": (15, 3), "cuda": (30, 30)}  # timed rounds: default, --quick (the default shape only)


def explicit_attention(q, k, v, dropout_p):
    T = q.size(-2)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    att = att.masked_fill(~mask, float("-inf"))
    att = F.softmax(att, dim=-1)
    att = F.dropout(att, p=dropout_p, training=True)
    return att @ v


def sdpa(backend=None):
    def run(q, k, v, dropout_p):
        if backend is None:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        from torch.nn.attention import sdpa_kernel
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    return run


def providers(device, kernels):
    """(name, fn(q, k, v, dropout_p)); None where the extension is needed and missing."""
    from torch.nn.attention import SDPBackend
    names = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
             "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
    if device.type == "cpu":
        names = {k: v for k, v in names.items() if k in ("flash", "math")}
    result = [("explicit", explicit_attention), ("sdpa", sdpa())]
    result += [(f"sdpa-{name}", sdpa(backend)) for name, backend in names.items()]
    result.append(("ours", kernels and torch.ops.gpt_kernels.causal_attention))
    return result


def causal_flops(B, H, T, D, mode):
    forward = 2 * B * H * T * T * D  # 2 gemms x 2 FLOP x (T*T/2 causal entries) x D
    return forward * (1 if mode == "fwd" else 3.5)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_arguments(parser, reps=REPS)
    parser.add_argument("--shapes", default=None, help="e.g. 32x6x256x64,8x12x1024x64")
    args = parser.parse_args()
    device = common.pick_device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if args.shapes:
        shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    else:
        shapes = [(32, 6, 256, 64)]
        if device.type == "cuda" and not args.quick:
            shapes += [(8, 12, 1024, 64), (4, 16, 2048, 128)]
    reps = common.rounds(args, device, REPS)
    limits = ("matmul_tflops",) + (("copy_gbs",) if device.type == "cuda" else ())
    bench = common.Bench("causal_attention_bench", args, references=("sdpa", "explicit"), limits=limits,
                         rounds=reps, warmup=2, skip_errors=True)  # a backend that does not take a case
    print(f"{dtype}, shapes {shapes}")
    fns = bench.wanted(providers(device, common.load_kernels()))
    for B, H, T, D in shapes:
        gen = torch.Generator(device="cpu").manual_seed(0)
        q, k, v = [torch.randn(B, H, T, D, generator=gen).to(device, dtype).requires_grad_()
                   for _ in range(3)]
        grad = torch.randn(B, H, T, D, generator=gen).to(device, dtype)
        for mode in common.MODES:
            for dropout_p in (0.0, 0.1):
                calls = {name: common.step(fn, (q, k, v, dropout_p), mode, grad=grad) for name, fn in fns}
                bench.compare({"shape": f"{B}x{H}x{T}x{D}", "mode": mode, "dropout": dropout_p}, calls,
                              flops=causal_flops(B, H, T, D, mode))
    bench.write(notes="Causal FLOPs: forward 2*B*H*T*T*D, backward 2.5x forward. `sdpa` is torch's own "
                      "backend choice (on the CPU with dropout > 0 it falls back to the math path). "
                      f"{'CPU: fp32' if device.type == 'cpu' else 'CUDA: bf16'}.",
                headers={"shape": "B x H x T x D", "dropout": ("p", "{:.1f}")})


if __name__ == "__main__":
    main()
