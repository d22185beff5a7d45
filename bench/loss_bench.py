"""Cross-entropy benchmark: torch eager vs torch.compile vs our fused kernel (issue 3).

    python bench/loss_bench.py                   # CUDA when present, else CPU; all shapes
    python bench/loss_bench.py --quick           # the default training shape only, fewer repeats
    python bench/loss_bench.py --device cpu --shapes 8192x1000,8192x50257 --dtypes float32

For each shape (N, V), dtype (float32; and bfloat16 on GPU) and mode (fwd: the loss alone, under
no_grad; fwd+bwd: loss and d loss / d logits, as in training), the providers side by side:
    torch        F.cross_entropy, eager
    compile      torch.compile(F.cross_entropy)
    ours         torch.ops.gpt_kernels.cross_entropy
    ours-inplace gpt_kernels.cross_entropy_inplace (fwd+bwd only: the gradient overwrites logits)
Reported: median ms; effective GB/s counting the logits read once plus (fwd+bwd) the gradient
written once, whatever a provider really moves; that as a fraction of the copy bandwidth measured
in the same run (read + write bytes of a 256 MB copy, bench/common.py), with the bandwidth of a
logits-sized copy timed in the same rounds as the providers beside it; speed-up over eager; peak
memory allocated
during the call above what was allocated before it (the logits themselves are not counted).
The gradient is taken with torch.autograd.grad, so no provider pays for accumulating into .grad.
Writes bench/results/loss_bench_<device>.json and .md (loss_bench_quick_<device> with --quick).
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import gpt_kernels  # noqa: E402

SHAPES = [(8192, 1000), (8192, 32000), (8192, 50257), (4096, 128256)]


def parse_shapes(text):
    return [tuple(int(v) for v in s.lower().split("x")) for s in text.split(",") if s]


def make_call(provider, mode, x, t):
    """A function running one forward (fwd) or forward+backward (fwd+bwd), and an untimed setup."""
    if provider == "torch":
        loss_fn = F.cross_entropy
    elif provider == "compile":
        loss_fn = torch.compile(lambda a, b: F.cross_entropy(a, b), dynamic=False)
    elif provider == "ours":
        loss_fn = torch.ops.gpt_kernels.cross_entropy
    else:
        loss_fn = gpt_kernels.cross_entropy_inplace

    if mode == "fwd":
        def fwd():
            with torch.no_grad():
                loss_fn(x, t)
        return fwd, None

    leaf = x.detach().requires_grad_()
    if provider != "ours-inplace":
        def fwd_bwd():
            torch.autograd.grad(loss_fn(leaf, t), leaf)
        return fwd_bwd, None
    # in place: each repeat needs live (non-leaf) logits to overwrite; made outside the timing
    state = {}

    def setup():
        state["logits"] = None
        state["logits"] = leaf.clone()  # a non-leaf holding the logits

    def fwd_bwd_inplace():
        logits = state.pop("logits")
        torch.autograd.grad(loss_fn(logits, t), logits)
    return fwd_bwd_inplace, setup


def time_once_ms(fn, setup, device):
    if setup:
        setup()
    if device.type == "cuda":
        common.flush_l2(device)
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        end.synchronize()
        return begin.elapsed_time(end)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def measure_round_robin(calls, device, budget_s):
    """Median ms of each (fn, setup) in calls, timed in interleaved rounds (A, B, C, A, B, C, ...)
    so that a change of load on a shared machine hits every provider alike: only same-run ratios
    count. Repeats are fitted to budget_s seconds per call (the big CPU shapes take seconds).
    When calls are short, a round runs each one 3 times in a row and keeps the last 2: the first
    absorbs the switch from the previous provider (caches; on the CPU, the malloc heap another
    provider's buffers left behind, which can make a fresh N x V output page-fault)."""
    one = []
    for fn, setup in calls:  # the first call compiles and warms caches; the second estimates
        time_once_ms(fn, setup, device)
        one.append(time_once_ms(fn, setup, device))
    batch = 3 if max(one) < 100 else 1
    rounds = int(max(3, min(1000, budget_s * 1e3 * len(calls) / (batch * sum(one)))))
    times = [[] for _ in calls]
    for _ in range(rounds):
        for i, (fn, setup) in enumerate(calls):
            for b in range(batch):
                ms = time_once_ms(fn, setup, device)
                if b > 0 or batch == 1:
                    times[i].append(ms)
    return [statistics.median(t) for t in times]


def peak_bytes(fn, setup, device):
    if setup:
        setup()
    return common.peak_memory_bytes(fn, device)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    parser.add_argument("--shapes", default=None, help="comma-separated NxV, e.g. 8192x1000,8192x50257")
    parser.add_argument("--dtypes", default=None, help="float32 and/or bfloat16 (default: float32, plus bfloat16 on GPU)")
    parser.add_argument("--providers", default="torch,compile,ours,ours-inplace")
    parser.add_argument("--quick", action="store_true", help="the (8192, 1000) shape only, short time budget")
    parser.add_argument("--budget", type=float, default=None, help="seconds of timing per row (default 6 CPU, 1 GPU)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not write bench/results")
    common.add_tag_argument(parser)
    args = parser.parse_args()

    device = common.pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shapes = parse_shapes(args.shapes) if args.shapes else ([SHAPES[0]] if args.quick else SHAPES)
    if args.dtypes:
        dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    else:
        dtypes = [torch.float32] + ([torch.bfloat16] if device.type == "cuda" else [])
    providers = args.providers.split(",")
    budget = args.budget or ((2.0 if args.quick else 6.0) if device.type == "cpu" else 1.0)
    torch._dynamo.config.cache_size_limit = 64

    copy_gbs = common.copy_bandwidth_gbs(device)
    print(f"{common.device_name(device)}: copy bandwidth {copy_gbs:.1f} GB/s (read + write)")
    rows = []
    for (n, v) in shapes:
        for dtype in dtypes:
            x = torch.randn(n, v, device=device, dtype=dtype)
            t = torch.randint(0, v, (n,), device=device)
            elsize = x.element_size()
            for mode in ("fwd", "fwd+bwd"):
                names = [p for p in providers if not (p == "ours-inplace" and mode == "fwd")]
                calls = [make_call(p, mode, x, t) for p in names]
                # the copy of a tensor of the logits' size, in the same rounds: the bandwidth the
                # kernels are compared with, measured under the same load
                dst = torch.empty_like(x)
                ms_all = measure_round_robin(calls + [(lambda: dst.copy_(x), None)], device, budget)
                copy_ms = ms_all.pop()
                shape_copy_gbs = 2 * x.numel() * elsize / (copy_ms * 1e-3) / 1e9
                del dst
                eager_ms = ms_all[names.index("torch")] if "torch" in names else None
                for provider, (fn, setup), ms in zip(names, calls, ms_all):
                    peak = peak_bytes(fn, setup, device)
                    moved = n * v * elsize * (2 if mode == "fwd+bwd" else 1)
                    gbs = moved / (ms * 1e-3) / 1e9
                    row = {"shape": f"{n}x{v}", "dtype": str(dtype).replace("torch.", ""), "mode": mode,
                           "provider": provider, "ms": ms, "gbs": gbs, "copy_gbs": shape_copy_gbs,
                           "copy_frac": gbs / copy_gbs,
                           "speedup": eager_ms / ms if eager_ms else None, "peak_mb": peak / 2**20}
                    rows.append(row)
                    print(f"  {row['shape']:>12} {row['dtype']:>8} {mode:>7} {provider:>12}: {ms:9.3f} ms "
                          f"{gbs:7.1f} GB/s ({row['copy_frac']:5.1%} of copy; logits copy {shape_copy_gbs:.1f}) "
                          f"x{row['speedup'] or 1:5.2f} peak {row['peak_mb']:8.1f} MB", flush=True)
            del x, t
    columns = [("shape", "N x V", ""), ("dtype", "dtype", ""), ("mode", "mode", ""),
               ("provider", "provider", ""), ("ms", "median ms", "{:.3f}"), ("gbs", "eff. GB/s", "{:.1f}"),
               ("copy_frac", "of copy bw", "{:.1%}"), ("copy_gbs", "logits copy GB/s", "{:.1f}"), ("speedup", "vs eager", "{:.2f}x"),
               ("peak_mb", "peak MB", "{:.1f}")]
    notes = ("Providers and a copy of a logits-sized tensor are timed in interleaved rounds, so load "
             "changes on a shared machine hit all alike (the logits copy column shows the load of "
             "each row's rounds; a 32 MB copy may be partly served by the L3 cache). "
             "Effective GB/s counts the logits read once (fwd) plus the gradient written once "
             "(fwd+bwd). 'of copy bw' is relative to the 256 MB copy measured at the start "
             "(read + write bytes), so a kernel "
             "that reads the logits once from memory and writes the gradient once can approach "
             "100%; one that reads the logits twice from memory is bounded near 67%.")
    if args.no_write:
        print(common.markdown_table(rows, columns))
    else:
        name = "loss_bench_quick" if args.quick else "loss_bench"  # --quick keeps the full table
        common.write_results(common.tagged(name, args.tag), device, rows, columns, {"copy_gbs": copy_gbs}, notes)


if __name__ == "__main__":
    main()
