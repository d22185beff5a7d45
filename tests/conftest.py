"""Shared helpers for the tests: running the training script as a user would."""
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "gpt_pretrain.py")

# A model small enough that a CLI run of a few iterations takes a second or two.
TINY = ["--context-len", "16", "--embed-dim", "32", "--n-head", "2", "--n-layer", "2",
        "--batch-size", "4", "--eval-iters", "2", "--warmup-iters", "2"]


def run_script(*args, check=True, timeout=300):
    """Run gpt_pretrain.py in a subprocess; returns the CompletedProcess."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    result = subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True,
                            text=True, timeout=timeout, cwd=ROOT, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"gpt_pretrain.py {' '.join(map(str, args))} exited "
                             f"{result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


@pytest.fixture
def token_file(tmp_path):
    """A raw uint16 token file of 4000 random ids below 64."""
    path = tmp_path / "tokens.bin"
    np.random.default_rng(0).integers(0, 64, 4000).astype(np.uint16).tofile(path)
    return path
