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
logits-sized copy timed in the same rounds as the providers beside it; speed-up over eager
(torch); peak memory allocated during the call above what was allocated before it (the logits
themselves are not counted). Without the extension only torch and compile run, saying so.
The gradient is taken with torch.autograd.grad, so no provider pays for accumulating into .grad.
Writes bench/results/loss_bench_<device>.json and .md (loss_bench_quick_<device> with --quick).
"""
import argparse

import torch
import torch.nn.functional as F

import common

OP = "cross_entropy"  # torch.ops.gpt_kernels.cross_entropy; bench/run_all.sh finds this bench by it

SHAPES = [(8192, 1000), (8192, 32000), (8192, 50257), (4096, 128256)]


def providers(kernels):
    """(name, loss_fn(logits, targets)); None where the extension is needed and missing."""
    return [("torch", F.cross_entropy),
            ("compile", torch.compile(lambda a, b: F.cross_entropy(a, b), dynamic=False)),
            ("ours", kernels and torch.ops.gpt_kernels.cross_entropy),
            ("ours-inplace", kernels and kernels.cross_entropy_inplace)]


def inplace_call(loss_fn, leaf, t):
    """fwd+bwd of the in-place loss: each repeat needs live (non-leaf) logits to overwrite, made
    by the untimed setup."""
    state = {}

    def setup():
        state["logits"] = None
        state["logits"] = leaf.clone()  # a non-leaf holding the logits

    def fwd_bwd_inplace():
        logits = state.pop("logits")
        torch.autograd.grad(loss_fn(logits, t), logits)
    return fwd_bwd_inplace, setup


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_arguments(parser, providers="torch,compile,ours,ours-inplace",
                         quick="the (8192, 1000) shape only, short time budget")
    parser.add_argument("--shapes", default=None, help="comma-separated NxV, e.g. 8192x1000,8192x50257")
    parser.add_argument("--dtypes", default=None, help="float32 and/or bfloat16 (default: float32, plus bfloat16 on GPU)")
    parser.add_argument("--budget", type=float, default=None, help="seconds of timing per row (default 6 CPU, 1 GPU)")
    args = parser.parse_args()
    device = common.pick_device(args.device)
    budget = args.budget or ((2.0 if args.quick else 6.0) if device.type == "cpu" else 1.0)
    bench = common.Bench("loss_bench", args, limits=("copy_gbs",), budget_s=budget, warmup=2, repeat="auto")
    torch.manual_seed(0)
    shapes = ([tuple(int(v) for v in s.lower().split("x")) for s in args.shapes.split(",") if s] if args.shapes
              else [SHAPES[0]] if args.quick else SHAPES)
    if args.dtypes:
        dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    else:
        dtypes = [torch.float32] + ([torch.bfloat16] if device.type == "cuda" else [])
    torch._dynamo.config.cache_size_limit = 64
    loss_fns = bench.wanted(providers(common.load_kernels()), args.providers)

    for (n, v) in shapes:
        for dtype in dtypes:
            x = torch.randn(n, v, device=device, dtype=dtype)
            t = torch.randint(0, v, (n,), device=device)
            leaf = x.detach().requires_grad_()
            for mode in common.MODES:
                calls = {}
                for name, loss_fn in loss_fns:
                    if name != "ours-inplace":
                        calls[name] = common.step(loss_fn, (x if mode == "fwd" else leaf, t), mode)
                    elif mode == "fwd+bwd":
                        calls[name] = inplace_call(loss_fn, leaf, t)
                # the copy of a tensor of the logits' size, in the same rounds: the bandwidth the
                # kernels are compared with, measured under the same load
                bench.compare({"shape": f"{n}x{v}", "dtype": str(dtype).replace("torch.", ""), "mode": mode},
                              calls, nbytes=n * v * x.element_size() * (2 if mode == "fwd+bwd" else 1), copy_of=x)
            del x, t, leaf
    bench.write(notes="Providers and a copy of a logits-sized tensor are timed in interleaved rounds, so load "
                      "changes on a shared machine hit all alike (the same-round copy column shows the load of "
                      "each row's rounds; a 32 MB copy may be partly served by the L3 cache). "
                      "Effective GB/s counts the logits read once (fwd) plus the gradient written once "
                      "(fwd+bwd). 'of copy bw' is relative to the 256 MB copy measured at the start "
                      "(read + write bytes), so a kernel that reads the logits once from memory and writes "
                      "the gradient once can approach 100%; one that reads the logits twice from memory is "
                      "bounded near 67%.",
                headers={"shape": "N x V"})


if __name__ == "__main__":
    main()
