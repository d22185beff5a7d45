"""Causal attention side by side: explicit PyTorch, F.scaled_dot_product_attention, ours.

    python bench/attn_bench.py                 # the default device (cuda if present, else cpu)
    python bench/attn_bench.py --device cpu --quick

For each shape (B, H, T, D), mode (forward; forward+backward) and dropout (0, 0.1):
  explicit   softmax(q k^T / sqrt(D) masked) @ v, nanoGPT's manual path (materialises T x T)
  sdpa       F.scaled_dot_product_attention(is_causal=True), torch's own backend choice
  sdpa-<b>   the same forced to each backend that accepts the case (flash, efficient, cudnn,
             math; on the CPU flash and math)
  ours       torch.ops.gpt_kernels.causal_attention
Columns: median ms; achieved TFLOP/s counting causal FLOPs only (forward 2*B*H*T*T*D, i.e. two
gemms over half of the T x T scores; backward 2.5x the forward); speed-up of ours-and-others
relative to sdpa and to explicit in the same run (x > 1 means faster than them); peak memory
allocated above the inputs. Default shape (32, 6, 256, 64) (the default model: B=32, T=256,
6 heads of 64); on CUDA also (8, 12, 1024, 64) and (4, 16, 2048, 128). CPU: fp32; CUDA: bf16.
Results: bench/results/attn_bench_<device>.json and .md.
"""
import argparse
import math
import os
import statistics
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402

try:
    import gpt_kernels  # noqa: F401
    HAVE_OURS = True
except ImportError as e:  # the benchmark still shows the PyTorch paths
    print(f"gpt_kernels not importable ({e}); benchmarking PyTorch only")
    HAVE_OURS = False


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


def ours(q, k, v, dropout_p):
    return torch.ops.gpt_kernels.causal_attention(q, k, v, dropout_p)


def providers(device):
    from torch.nn.attention import SDPBackend
    names = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
             "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
    if device.type == "cpu":
        names = {k: v for k, v in names.items() if k in ("flash", "math")}
    result = [("explicit", explicit_attention), ("sdpa", sdpa())]
    result += [(f"sdpa-{name}", sdpa(backend)) for name, backend in names.items()]
    if HAVE_OURS:
        result.append(("ours", ours))
    return result


def causal_flops(B, H, T, D, mode):
    forward = 2 * B * H * T * T * D  # 2 gemms x 2 FLOP x (T*T/2 causal entries) x D
    return forward * (1 if mode == "fwd" else 3.5)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, default shape only")
    parser.add_argument("--shapes", default=None, help="e.g. 32x6x256x64,8x12x1024x64")
    common.add_tag_argument(parser)
    args = parser.parse_args()
    device = common.pick_device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if args.shapes:
        shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    else:
        shapes = [(32, 6, 256, 64)]
        if device.type == "cuda" and not args.quick:
            shapes += [(8, 12, 1024, 64), (4, 16, 2048, 128)]
    reps = 3 if args.quick else (15 if device.type == "cpu" else 30)
    print(f"attn_bench on {common.device_name(device)}, {dtype}, shapes {shapes}")

    limits = {"matmul_tflops": common.matmul_tflops(device)}
    if device.type == "cuda":
        limits["copy_gbs"] = common.copy_bandwidth_gbs(device)
    rows = []
    for B, H, T, D in shapes:
        gen = torch.Generator(device="cpu").manual_seed(0)
        q, k, v = [torch.randn(B, H, T, D, generator=gen).to(device, dtype).requires_grad_()
                   for _ in range(3)]
        grad = torch.randn(B, H, T, D, generator=gen).to(device, dtype)
        for mode in ("fwd", "fwd+bwd"):
            for dropout_p in (0.0, 0.1):
                steps = {}
                for name, fn in providers(device):
                    if mode == "fwd":
                        def step(fn=fn):
                            with torch.no_grad():
                                return fn(q, k, v, dropout_p)
                    else:
                        def step(fn=fn):
                            return torch.autograd.grad(fn(q, k, v, dropout_p), (q, k, v), grad)
                    try:
                        common.time_ms(step, device, warmup=1, reps=1)  # warm-up
                        steps[name] = step
                    except RuntimeError as e:  # this backend does not take this case
                        print(f"  skip {name} {mode} p={dropout_p}: {str(e).splitlines()[0][:100]}")
                # Repeats interleaved across providers (round-robin), so that a machine whose
                # load changes during the run (shared CPUs) slows every provider alike and the
                # same-run ratios stay meaningful.
                times = {name: [] for name in steps}
                for _ in range(reps):
                    for name, step in steps.items():
                        times[name].append(common.time_ms(step, device, warmup=0, reps=1))
                group = []
                for name, step in steps.items():
                    ms = statistics.median(times[name])
                    peak = common.peak_memory_bytes(step, device)
                    group.append({"shape": f"{B}x{H}x{T}x{D}", "mode": mode, "dropout": dropout_p,
                                  "provider": name, "ms": ms,
                                  "tflops": causal_flops(B, H, T, D, mode) / (ms * 1e-3) / 1e12,
                                  "peak_mb": peak / 2**20})
                    print(f"  {B}x{H}x{T}x{D} {mode:8s} p={dropout_p} {name:14s} {ms:9.3f} ms")
                ref = {r["provider"]: r["ms"] for r in group}
                for r in group:
                    r["vs_sdpa"] = ref["sdpa"] / r["ms"] if "sdpa" in ref else None
                    r["vs_explicit"] = ref["explicit"] / r["ms"] if "explicit" in ref else None
                rows += group

    columns = [("shape", "B x H x T x D", ""), ("mode", "mode", ""), ("dropout", "p", "{:.1f}"),
               ("provider", "provider", ""), ("ms", "median ms", "{:.3f}"),
               ("tflops", "TFLOP/s", "{:.3f}"), ("vs_sdpa", "speed-up vs sdpa", "{:.2f}x"),
               ("vs_explicit", "speed-up vs explicit", "{:.2f}x"), ("peak_mb", "peak MB", "{:.1f}")]
    notes = ("Causal FLOPs: forward 2*B*H*T*T*D, backward 2.5x forward. `sdpa` is torch's own "
             "backend choice (on the CPU with dropout > 0 it falls back to the math path). "
             f"{'CPU: fp32' if device.type == 'cpu' else 'CUDA: bf16'}; median of {reps} repeats, "
             "interleaved across providers.")
    name = common.tagged("attn_bench_quick" if args.quick else "attn_bench", args.tag)
    common.write_results(name, device, rows, columns, limits, notes)


if __name__ == "__main__":
    main()
