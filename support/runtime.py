"""Run-time settings and hints for gpt_pretrain.py that are not part of training itself."""
import ctypes
import ctypes.util
import sys
import time

import torch


def keep_freed_memory():
    """On Linux with glibc, keep freed blocks in the process instead of returning them to the OS.

    glibc serves blocks above 32 MB with mmap and unmaps them when freed (and trims the heap's
    top), so the next step's tensor of the same size faults every page in again: on the 2-core
    test machine a fresh 50 MB tensor costs 18 ms of page faults against 1.5 ms to fill one, and
    a training step of the default model on the PyTorch path spent ~1 s of system time in them.
    A training loop allocates the same sizes every step, so the process's memory simply stays at
    its first step's peak. Returns whether the setting took (False elsewhere, e.g. musl, macOS).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # malloc.h
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def warn_if_slow_on_cpu(model, config, args, device):
    """The reference config needs a GPU: say so before the first step, not via a slow tqdm ETA."""
    if device.type != "cpu" or args.preset:
        return
    tokens = args.batch_size * args.grad_accum * config.context_len
    flops = 6 * model.num_params() * tokens + 12 * config.n_layer * config.embed_dim * config.context_len * tokens
    a = torch.full((512, 512), 0.5)  # not randn: this must not move the RNG that dropout uses
    a @ a  # warm-up: the first product also starts the thread pool
    t0 = time.perf_counter()
    for _ in range(10):
        a @ a
    gemm_rate = 10 * 2 * 512**3 / (time.perf_counter() - t0)
    seconds = flops / (0.6 * gemm_rate) * args.max_iters  # a full step runs at ~60% of sgemm speed
    if seconds > 1800:
        print(f"Note: this config on this CPU takes roughly {flops / (0.6 * gemm_rate):.1f} s per iteration, "
              f"about {seconds / 3600:.0f} hours for {args.max_iters} iterations. "
              "`--preset cpu` trains a smaller model in about 5 minutes; a GPU runs this one in minutes.")
