"""Residual dropout benchmark: torch.ops.gpt_kernels.dropout_add beside PyTorch.

    python bench/dropout_add_bench.py                # GPU when present, else CPU
    python bench/dropout_add_bench.py --device cpu --quick       # 10 rounds instead of 30
    python bench/dropout_add_bench.py --no-compile --tag eager    # no torch.compile; own file

out = residual + dropout(x, p), p = 0.1, forward and forward+backward, for: torch eager
(`residual + F.dropout(x, p)`, as the model's PyTorch path writes it), the same under
torch.compile, and ours (one pass; the backward regenerates the mask). Shapes: the default
model's residual stream (32, 256, 384) fp32, and on GPU also GPT-2 small's (16, 1024, 768)
with a bf16 branch and an fp32 residual (bf16 autocast). For each: median time, effective
GB/s (the minimum traffic: x, residual read and out written; plus grad_out read and grad_x
written in the backward), that as a fraction of the copy bandwidth measured in the same run,
and peak memory. Without the extension, ours is left out, saying so.
Writes bench/results/dropout_add_bench[_quick]_<device>.json and .md.
"""
import argparse

import torch
import torch.nn.functional as F

import common

OP = "dropout_add"  # torch.ops.gpt_kernels.dropout_add; bench/run_all.sh finds this bench by it

P = 0.1
REPS = {"cpu": (30, 10), "cuda": (100, 30)}  # timed rounds: default, --quick


def providers(kernels):
    """(name, fn(x, residual)); None where the extension is needed and missing."""
    def eager(x, residual):
        return residual + F.dropout(x, P, training=True)
    return [("torch", eager), ("compile", torch.compile(eager)),
            ("ours", kernels and (lambda x, residual: torch.ops.gpt_kernels.dropout_add(x, residual, P)))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_arguments(parser, providers="torch,compile,ours", quick="fewer timed rounds", reps=REPS)
    args = parser.parse_args()
    device = common.pick_device(args.device)
    bench = common.Bench("dropout_add_bench", args, limits=("copy_gbs",), rounds=common.rounds(args, device, REPS),
                         warmup=4)
    fns = bench.wanted(providers(common.load_kernels()), args.providers)
    cases = [((32, 256, 384), torch.float32, torch.float32)]
    if device.type == "cuda":
        cases += [((16, 1024, 768), torch.bfloat16, torch.float32), ((16, 1024, 768), torch.float32, torch.float32)]
    for shape, x_dtype, r_dtype in cases:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(shape, generator=gen).to(device, x_dtype).requires_grad_()
        residual = torch.randn(shape, generator=gen).to(device, r_dtype).requires_grad_()
        grad = torch.randn(shape, generator=gen).to(device, r_dtype)
        n = x.numel()
        for mode in common.MODES:
            # bytes the op must move: x and residual read, out written (+ grad_out read, grad_x written)
            moved = n * (x.element_size() + 2 * residual.element_size())
            if mode == "fwd+bwd":
                moved += n * (grad.element_size() + x.element_size())
            calls = {name: common.step(fn, (x, residual), mode, grad=grad) for name, fn in fns}
            bench.compare({"shape": "x".join(map(str, shape)),
                           "dtypes": f"{str(x_dtype)[6:]}+{str(r_dtype)[6:]}", "mode": mode}, calls, nbytes=moved)
    bench.write(notes=f"p = {P}. Effective GB/s counts the minimum traffic (x, residual read and out written; "
                      "the backward adds grad_out read and grad_x written; the residual's gradient is "
                      "grad_out itself); 'of copy bw' relative to a 256 MB copy in the same run.",
                headers={"shape": "B x T x C", "dtypes": "x + residual"})


if __name__ == "__main__":
    main()
