"""Residual dropout benchmark: torch.ops.gpt_kernels.dropout_add beside PyTorch.

    python bench/dropout_bench.py                # GPU when present, else CPU
    python bench/dropout_bench.py --device cpu
    python bench/dropout_bench.py --providers torch,ours --tag eager   # no torch.compile; own file

out = residual + dropout(x, p), p = 0.1, forward and forward+backward, for: torch eager
(`residual + F.dropout(x, p)`, as the model's PyTorch path writes it), the same under
torch.compile, and ours (one pass; the backward regenerates the mask). Shapes: the default
model's residual stream (32, 256, 384) fp32, and on GPU also GPT-2 small's (16, 1024, 768)
with a bf16 branch and an fp32 residual (bf16 autocast). For each: median time, effective
GB/s (the minimum traffic: x, residual read and out written; plus grad_out read and grad_x
written in the backward), that as a fraction of the copy bandwidth measured in the same run,
and peak memory. Writes bench/results/dropout_bench_<device>.json and .md.
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

P = 0.1


def providers(have_ext, wanted):
    def eager(x, residual):
        return residual + F.dropout(x, P, training=True)
    result = [("torch", eager), ("compile", torch.compile(eager))]
    if have_ext:
        result.append(("ours", lambda x, residual: torch.ops.gpt_kernels.dropout_add(x, residual, P)))
    return [(name, fn) for name, fn in result if name in wanted]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--reps", type=int, default=None, help="timed rounds (default 30 CPU, 100 GPU)")
    parser.add_argument("--providers", default="torch,compile,ours",
                        help="a subset of torch,compile,ours (torch always: the speed-ups are over it)")
    common.add_tag_argument(parser)
    args = parser.parse_args()
    wanted = set(args.providers.split(",")) | {"torch"}
    device = common.pick_device(args.device)
    have_ext = common.have_extension()
    cases = [((32, 256, 384), torch.float32, torch.float32)]
    if device.type == "cuda":
        cases += [((16, 1024, 768), torch.bfloat16, torch.float32), ((16, 1024, 768), torch.float32, torch.float32)]
    reps = args.reps or (30 if device.type == "cpu" else 100)
    copy_gbs = common.copy_bandwidth_gbs(device)
    print(f"dropout_bench on {common.device_name(device)}: copy bandwidth {copy_gbs:.1f} GB/s")

    rows = []
    for shape, x_dtype, r_dtype in cases:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(shape, generator=gen).to(device, x_dtype).requires_grad_()
        residual = torch.randn(shape, generator=gen).to(device, r_dtype).requires_grad_()
        grad = torch.randn(shape, generator=gen).to(device, r_dtype)
        n = x.numel()
        for mode in ("fwd", "fwd+bwd"):
            steps = {}
            for name, fn in providers(have_ext, wanted):
                if mode == "fwd":
                    def step(fn=fn):
                        with torch.no_grad():
                            return fn(x, residual)
                else:
                    def step(fn=fn):
                        return torch.autograd.grad(fn(x, residual), (x, residual), grad)
                common.time_ms(step, device, warmup=3, reps=1)  # warm-up (and compile)
                steps[name] = step
            times = {name: [] for name in steps}
            for _ in range(reps):  # interleaved rounds: load changes hit every provider alike
                for name, step in steps.items():
                    common.flush_l2(device)
                    times[name].append(common.time_ms(step, device, warmup=0, reps=1))
            # bytes the op must move: x and residual read, out written (+ grad_out read, grad_x written)
            moved = n * (x.element_size() + 2 * residual.element_size())
            if mode == "fwd+bwd":
                moved += n * (grad.element_size() + x.element_size())
            eager_ms = statistics.median(times["torch"])
            for name, step in steps.items():
                ms = statistics.median(times[name])
                gbs = moved / (ms * 1e-3) / 1e9
                rows.append({"shape": "x".join(map(str, shape)),
                             "dtypes": f"{str(x_dtype)[6:]}+{str(r_dtype)[6:]}", "mode": mode,
                             "provider": name, "ms": ms, "gbs": gbs, "copy_frac": gbs / copy_gbs,
                             "speedup": eager_ms / ms,
                             "peak_mb": common.peak_memory_bytes(step, device) / 2**20})
                print(f"  {rows[-1]['shape']:>12} {rows[-1]['dtypes']:>17} {mode:>7} {name:>8}: "
                      f"{ms:8.3f} ms {gbs:7.1f} GB/s ({gbs / copy_gbs:5.1%} of copy) x{eager_ms / ms:5.2f}")
    columns = [("shape", "B x T x C", ""), ("dtypes", "x + residual", ""), ("mode", "mode", ""),
               ("provider", "provider", ""), ("ms", "median ms", "{:.3f}"), ("gbs", "eff. GB/s", "{:.1f}"),
               ("copy_frac", "of copy bw", "{:.1%}"), ("speedup", "vs eager", "{:.2f}x"),
               ("peak_mb", "peak MB", "{:.1f}")]
    notes = (f"p = {P}. Effective GB/s counts the minimum traffic (x, residual read and out written; "
             "the backward adds grad_out read and grad_x written; the residual's gradient is "
             "grad_out itself), over the median time of "
             f"{reps} interleaved rounds; 'of copy bw' relative to a 256 MB copy in the same run.")
    common.write_results(common.tagged("dropout_bench", args.tag), device, rows, columns, {"copy_gbs": copy_gbs}, notes)


if __name__ == "__main__":
    main()
