"""Shared helpers for the tests: running the training script as a user would, and the one rule
for which tests run where.

- Tests marked `cuda` (pytest.mark.cuda, or pytest.param("cuda", marks=pytest.mark.cuda)) run
  only where a CUDA GPU is present AND gpt_kernels was built with its CUDA kernels; elsewhere
  they are skipped with the reason. `python -m pytest -m cuda` runs them alone (bench/run_all.sh).
- The compiled extension is expected to be built (`pip install -e .` builds it): if
  `import gpt_kernels` fails, the run stops with the reason instead of skipping its tests.
  GPT_KERNELS_OPTIONAL=1 opts out (a machine where the extension cannot build): then only the
  tests of the pure PyTorch path run, and the summary says how many files were left out.
- Reading what a run wrote: read_metrics, train_records, train_losses (beside run_script). The
  checks every op of gpt_kernels gets are tests/op_checks.py's.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "gpt_pretrain.py")

# A model small enough that a CLI run of a few iterations takes a second or two.
TINY = ["--context-len", "16", "--embed-dim", "32", "--n-head", "2", "--n-layer", "2",
        "--batch-size", "4", "--eval-iters", "2", "--warmup-iters", "2"]

try:
    import gpt_kernels
    EXTENSION_ERROR = None
except Exception as e:  # ImportError, or an OSError from a library built for another torch
    gpt_kernels = None
    EXTENSION_ERROR = f"{type(e).__name__}: {e}"
EXTENSION_OPTIONAL = os.environ.get("GPT_KERNELS_OPTIONAL", "0") == "1"
TESTS = os.path.dirname(os.path.abspath(__file__))
# the test files that need the compiled extension: those that import it
EXTENSION_TEST_FILES = sorted(
    name for name in os.listdir(TESTS) if name.startswith("test_") and name.endswith(".py")
    and "import gpt_kernels" in open(os.path.join(TESTS, name), encoding="utf-8").read())
# pytest does not collect these when the user opted out of the extension and it is missing
collect_ignore = EXTENSION_TEST_FILES if EXTENSION_ERROR is not None else []


def pytest_configure(config):
    if EXTENSION_ERROR is not None and not EXTENSION_OPTIONAL:
        raise pytest.UsageError(
            f"gpt_kernels, the compiled extension, does not import ({EXTENSION_ERROR}).\n"
            "Build it with `pip install -e .` (`pip install -v -e .` shows why a build failed), "
            "or set GPT_KERNELS_OPTIONAL=1 to run only the tests of the pure PyTorch path.")
    # tests/test_simd_paths.py runs the op tests against another build of the extension: make
    # sure that build is the one imported
    expected = os.environ.get("GPT_KERNELS_EXPECT_BUILD")
    if expected and gpt_kernels is not None and \
            not os.path.abspath(gpt_kernels.__file__).startswith(os.path.abspath(expected)):
        raise pytest.UsageError(f"expected gpt_kernels from {expected}, imported {gpt_kernels.__file__}")


def cuda_skip_reason():
    """Why the `cuda` tests cannot run here, or None when they can."""
    if not torch.cuda.is_available():
        return "no CUDA GPU present"
    if gpt_kernels is None or not gpt_kernels.has_cuda_kernels():
        return ("gpt_kernels was built without its CUDA kernels (rebuild with GPT_KERNELS_CUDA=1 "
                "to insist on them)")
    return None


def pytest_collection_modifyitems(config, items):
    reason = cuda_skip_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    if EXTENSION_ERROR is not None:
        terminalreporter.write_line(
            f"GPT_KERNELS_OPTIONAL=1: {len(EXTENSION_TEST_FILES)} test files of the compiled "
            f"extension were not run ({EXTENSION_ERROR})", yellow=True)


def run_script(*args, check=True, timeout=300, env=None):
    """Run gpt_pretrain.py in a subprocess; returns the CompletedProcess."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), **(env or {})}
    result = subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True,
                            text=True, timeout=timeout, cwd=ROOT, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"gpt_pretrain.py {' '.join(map(str, args))} exited "
                             f"{result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def read_metrics(out_dir):
    """The records of a run's metrics.jsonl, in order (every line whole: json.loads fails on a
    half-written one)."""
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def train_records(out_dir):
    """{iteration: record} of the training-loss records of a run's metrics.jsonl."""
    return {r["iter"]: r for r in read_metrics(out_dir) if "train_loss" in r}


def train_losses(out_dir):
    """{iteration: training loss} from a run's metrics.jsonl."""
    return {i: r["train_loss"] for i, r in train_records(out_dir).items()}


def text_dataset(tmp_path_factory, files, functions, op):
    """A dataset folder prepared by data/prepare.py (byte-level BPE tokenizer of 300 ids, with
    <|endoftext|>) from `files` files of `functions` Python-like functions `return x {op} j`."""
    from data.prepare import prepare
    root = tmp_path_factory.mktemp("text")
    for i in range(files):
        (root / f"m{i}.py").write_text("".join(f"def f{j}(x):\n    return x {op} {j}\n\n" for j in range(functions)))
    out = tmp_path_factory.mktemp("ds")
    prepare(root, out, vocab_size=300)
    return out


@pytest.fixture
def token_file(tmp_path):
    """A raw uint16 token file of 4000 random ids below 64."""
    path = tmp_path / "tokens.bin"
    np.random.default_rng(0).integers(0, 64, 4000).astype(np.uint16).tofile(path)
    return path
