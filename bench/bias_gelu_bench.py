"""Bias + GELU benchmark: torch.ops.gpt_kernels.bias_gelu beside PyTorch.

    python bench/bias_gelu_bench.py                # GPU when present, else CPU
    python bench/bias_gelu_bench.py --device cpu --quick        # 6 rounds instead of 20
    python bench/bias_gelu_bench.py --no-compile --tag eager       # no torch.compile; own file

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
the speed-up over eager and the peak memory. Without the extension, ours is left out, saying so.
Writes bench/results/bias_gelu_bench[_quick]_<device>.json/.md.
"""
import argparse

import torch
import torch.nn.functional as F

import common

OP = "bias_gelu"  # torch.ops.gpt_kernels.bias_gelu; bench/run_all.sh finds this bench by it
REPS = {"cpu": (20, 6), "cuda": (100, 30)}  # timed rounds (op rows; linear: half): default, --quick


def providers(setting, kernels):
    """(name, fn) for gelu(x + bias) from x ("op") or from the layer's input ("linear"); None where
    the extension is needed and missing."""
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
    return [("torch", eager), ("compile", torch.compile(eager)), ("ours", kernels and ours)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_arguments(parser, providers="torch,compile,ours", quick="fewer timed rounds", reps=REPS)
    args = parser.parse_args()
    device = common.pick_device(args.device)
    reps = common.rounds(args, device, REPS)  # the linear rows: half as many, at least 5
    bench = common.Bench("bias_gelu_bench", args, limits=("copy_gbs",), rounds=reps, warmup=4)
    kernels = common.load_kernels()
    cases = [(32 * 256, 384, 1536, torch.float32)]  # rows, embed, hidden, dtype
    if device.type == "cuda":
        cases += [(16 * 1024, 768, 3072, torch.bfloat16)]
    for n_rows, embed, hidden, dtype in cases:
        gen = torch.Generator().manual_seed(0)
        inp = torch.randn(n_rows, embed, generator=gen).to(device, dtype).requires_grad_()
        weight = (torch.randn(hidden, embed, generator=gen) * 0.02).to(device, dtype).requires_grad_()
        bias = (torch.randn(hidden, generator=gen) * 0.02).to(device, dtype).requires_grad_()
        x = torch.randn(n_rows, hidden, generator=gen).to(device, dtype).requires_grad_()
        grad = torch.randn(n_rows, hidden, generator=gen).to(device, dtype)
        for setting, inputs in (("op", (x, bias)), ("linear", (inp, weight, bias))):
            fns = bench.wanted(providers(setting, kernels), args.providers)
            for mode in common.MODES:
                calls = {name: common.step(fn, inputs, mode, grad=grad) for name, fn in fns}
                # op: x read and out written; the backward adds grad_out and x read, grad_x written.
                # linear: none (the matmul dominates)
                moved = x.numel() * x.element_size() * (2 if mode == "fwd" else 5) if setting == "op" else None
                bench.compare({"shape": f"{n_rows}x{embed}->{hidden}", "dtype": str(dtype)[6:], "setting": setting,
                               "mode": mode}, calls, nbytes=moved,
                              rounds=reps if setting == "op" else max(reps // 2, 5))
    bench.write(notes="op: gelu(x + bias) from x; linear: the layer from its input, matmul included "
                      "(GB/s not given: the matmul dominates). Effective GB/s counts the minimum traffic "
                      "(x read, out written; the backward adds grad_out and x read, grad_x written); "
                      "'of copy bw' relative to a 256 MB copy in the same run. On the CPU the outputs are "
                      "fresh 50 MB tensors whose pages fault in on first touch, which costs more than the "
                      "arithmetic (README.md, Benchmarks).",
                headers={"shape": "rows x embed -> hidden"})


if __name__ == "__main__":
    main()
