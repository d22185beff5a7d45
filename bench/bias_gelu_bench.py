"""Bias + GELU benchmark: torch.ops.gpt_kernels.bias_gelu beside PyTorch.

    python bench/gelu_bench.py                # GPU when present, else CPU
    python bench/gelu_bench.py --device cpu
    python bench/gelu_bench.py --providers torch,ours --tag eager      # no torch.compile; own file

The first MLP layer's activation, out = gelu(x + bias) (exact erf GELU), forward and
forward+backward, in two settings:
  op      x given: torch eager `F.gelu(x + bias)`, the same under torch.compile, and ours;
  linear  as the model runs it, from the layer's input: torch `F.gelu(F.linear(inp, W, b))`
          (addmm with the bias, then GELU), torch.compile of it, and ours
          `bias_gelu(F.linear(inp, W), b)` (a bias-free matmul, then one pass).
Shapes: the default model's (32 * 256 rows, 384 -> 1536) fp32, and on GPU also GPT-2 small's
(16 * 1024 rows, 768 -> 3072) in bf16. For the op rows: median time, effective GB/s (the
minimum traffic: x read and out written; the backward adds grad_out and x read and grad_x
written) and that as a fraction of the copy bandwidth measured in the same run; for all rows
the speed-up over eager and the peak memory. Writes bench/results/gelu_bench_<device>.json/.md.
"""
import argparse
import os
import statistics
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # gpt_kernels, built in place
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def providers(setting, have_ext, wanted):
    if setting == "op":
        def eager(x, bias):
            return F.gelu(x + bias)

        def ours(x, bias):
            return torch.ops.gpt_kernels.bias_gelu(x, bias)
    else:
        def eager(inp, weight, bias):
            return F.gelu(F.linear(inp, weight, bias))

        def ours(inp, weight, bias):
            return torch.ops.gpt_kernels.bias_gelu(F.linear(inp, weight), bias)
    result = [("torch", eager), ("compile", torch.compile(eager))]
    if have_ext:
        result.append(("ours", ours))
    return [(name, fn) for name, fn in result if name in wanted]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--reps", type=int, default=None, help="timed rounds (default 20 CPU, 100 GPU)")
    parser.add_argument("--providers", default="torch,compile,ours",
                        help="a subset of torch,compile,ours (torch always: the speed-ups are over it)")
    common.add_tag_argument(parser)
    args = parser.parse_args()
    wanted = set(args.providers.split(",")) | {"torch"}
    device = common.pick_device(args.device)
    have_ext = common.have_extension()
    cases = [(32 * 256, 384, 1536, torch.float32)]  # rows, embed, hidden, dtype
    if device.type == "cuda":
        cases += [(16 * 1024, 768, 3072, torch.bfloat16)]
    reps = args.reps or (20 if device.type == "cpu" else 100)
    copy_gbs = common.copy_bandwidth_gbs(device)
    print(f"gelu_bench on {common.device_name(device)}: copy bandwidth {copy_gbs:.1f} GB/s")

    rows = []
    for n_rows, embed, hidden, dtype in cases:
        gen = torch.Generator().manual_seed(0)
        inp = torch.randn(n_rows, embed, generator=gen).to(device, dtype).requires_grad_()
        weight = (torch.randn(hidden, embed, generator=gen) * 0.02).to(device, dtype).requires_grad_()
        bias = (torch.randn(hidden, generator=gen) * 0.02).to(device, dtype).requires_grad_()
        x = torch.randn(n_rows, hidden, generator=gen).to(device, dtype).requires_grad_()
        grad = torch.randn(n_rows, hidden, generator=gen).to(device, dtype)
        n = x.numel()
        for setting, args_ in (("op", (x, bias)), ("linear", (inp, weight, bias))):
            for mode in ("fwd", "fwd+bwd"):
                steps = {}
                for name, fn in providers(setting, have_ext, wanted):
                    if mode == "fwd":
                        def step(fn=fn):
                            with torch.no_grad():
                                return fn(*args_)
                    else:
                        def step(fn=fn):
                            return torch.autograd.grad(fn(*args_), args_, grad)
                    common.time_ms(step, device, warmup=3, reps=1)  # warm-up (and compile)
                    steps[name] = step
                times = {name: [] for name in steps}
                for _ in range(reps if setting == "op" else max(reps // 2, 5)):
                    for name, step in steps.items():  # interleaved: load changes hit all alike
                        common.flush_l2(device)
                        times[name].append(common.time_ms(step, device, warmup=0, reps=1))
                moved = n * x.element_size() * (2 if mode == "fwd" else 5)
                eager_ms = statistics.median(times["torch"])
                for name, step in steps.items():
                    ms = statistics.median(times[name])
                    gbs = moved / (ms * 1e-3) / 1e9 if setting == "op" else float("nan")
                    rows.append({"shape": f"{n_rows}x{embed}->{hidden}", "dtype": str(dtype)[6:],
                                 "setting": setting, "mode": mode, "provider": name, "ms": ms,
                                 "gbs": gbs, "copy_frac": gbs / copy_gbs, "speedup": eager_ms / ms,
                                 "peak_mb": common.peak_memory_bytes(step, device) / 2**20})
                    bw = f"{gbs:7.1f} GB/s ({gbs / copy_gbs:5.1%} of copy)" if setting == "op" else ""
                    print(f"  {rows[-1]['shape']:>16} {rows[-1]['dtype']:>8} {setting:>6} {mode:>7} "
                          f"{name:>8}: {ms:8.3f} ms x{eager_ms / ms:5.2f} {bw}")
    columns = [("shape", "rows x embed -> hidden", ""), ("dtype", "dtype", ""), ("setting", "setting", ""),
               ("mode", "mode", ""), ("provider", "provider", ""), ("ms", "median ms", "{:.3f}"),
               ("gbs", "eff. GB/s", "{:.1f}"), ("copy_frac", "of copy bw", "{:.1%}"),
               ("speedup", "vs eager", "{:.2f}x"), ("peak_mb", "peak MB", "{:.1f}")]
    notes = ("op: gelu(x + bias) from x; linear: the layer from its input, matmul included "
             "(GB/s not given: the matmul dominates). Effective GB/s counts the minimum traffic "
             "(x read, out written; the backward adds grad_out and x read, grad_x written) over the "
             f"median of {reps} interleaved rounds ({max(reps // 2, 5)} for linear); 'of copy bw' "
             "relative to a 256 MB copy in the same run. On the CPU the outputs are fresh 50 MB "
             "tensors whose pages fault in on first touch, which costs more than the arithmetic "
             "(README.md, Benchmarks).")
    common.write_results(common.tagged("gelu_bench", args.tag), device, rows, columns, {"copy_gbs": copy_gbs}, notes)


if __name__ == "__main__":
    main()
