"""Mutation check of the race check: removes each __syncthreads() / __syncwarp() of the kernel
files in turn (in a copy of csrc/), builds the mutant under the emulator and runs a few of
tests/test_emulated.py's checks on it. A removal the tests do not notice is either a barrier
that no tested shape needs or a gap in the tests; tests/cuda_emu/FOUND.md lists the last run.

    python tests/cuda_emu/barrier_mutants.py [op ...]     # ~10 minutes on 2 cores for all ops
"""
import os
import re
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/: cuda_emu and test_emulated

import torch  # noqa: E402

import cuda_emu  # noqa: E402
import test_emulated as T  # noqa: E402

ops = torch.ops.gpt_kernels


def check(op, lib):
    """Raises if the tests notice something wrong with lib."""
    if op == "causal_attention":
        T.check_attention(lib, 1, 2, 200, 32, torch.bfloat16, 0.2, strided=False, seed=1)
        T.check_attention(lib, 1, 2, 70, 64, torch.float16, 0.0, strided=False, seed=1)
    elif op == "cross_entropy":
        for dt in (torch.float32, torch.bfloat16):
            for V in (37, 1031, 4100):
                x, t = T.ce_inputs(5, V, dt, seed=V)
                for red in ("mean", "sum"):
                    r = cuda_emu.race_checked(lambda: cuda_emu.ce_forward(lib, x, t, -100, red, True), lib)
                    loss, grad = ops.cross_entropy_fwd(x, t, -100, red, True)
                    T.close(r["out"], loss, dt, "loss")
                    T.close(r["grad"], grad, dt, "grad")
    elif op == "bias_gelu":
        T.test_bias_gelu({"bias_gelu": lib}, torch.float32, (70, 300), 0, "none")
    elif op == "dropout_add":
        T.test_dropout_add_forward({"dropout_add": lib}, torch.float32, torch.float32, 5000, 0.3, 1)


def main(selected):
    for op, file in cuda_emu.OPS.items():
        if selected and op not in selected:
            continue
        with open(os.path.join(cuda_emu.ROOT, "csrc", "cuda", file)) as f:
            src = f.read()
        for m in re.finditer(r"__sync(threads|warp)\(\);", src):
            line = src.count("\n", 0, m.start()) + 1
            tmp = tempfile.mkdtemp(prefix="gk_mutant_")
            try:
                csrc = os.path.join(tmp, "csrc")
                shutil.copytree(os.path.join(cuda_emu.ROOT, "csrc"), csrc)
                with open(os.path.join(csrc, "cuda", file), "w") as f:
                    f.write(src[:m.start()] + "/* removed */" + src[m.end():])
                lib = cuda_emu.Library(cuda_emu.build(op, csrc))
                try:
                    check(op, lib)
                    verdict = "NOT CAUGHT"
                except Exception as e:  # noqa: BLE001 - any failure counts as caught
                    verdict = f"caught ({type(e).__name__}: {str(e).splitlines()[0][:100]})"
            finally:
                shutil.rmtree(tmp)
            print(f"{file}:{line} {m.group(0)} -> {verdict}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
