"""Run-time hints for gpt_pretrain.py that are not part of training itself: the model's FLOPs,
the accelerator's peak (for MFU), and a warning when the CPU would take hours."""
import re
import time

import torch

# Dense (no sparsity) bfloat16/float16 tensor-core peaks in FLOP/s, from NVIDIA's data sheets.
# The first pattern that matches torch.cuda.get_device_name() wins; --peak-flops overrides.
# float32 training (--dtype float32) runs far below these: give --peak-flops for its MFU.
GPU_PEAK_FLOPS = [
    (r"H100.*PCIe", 756e12),
    (r"H100.*NVL", 835e12),
    (r"H100|H200|H800", 989e12),   # SXM; GH200's Hopper too
    (r"A100|A800", 312e12),
    (r"L40S", 362e12),
    (r"\bL4\b", 121e12),
    (r"\bA10\b", 125e12),
    (r"V100", 125e12),             # float16 only (no bfloat16)
    (r"\bT4\b", 65e12),            # float16 only
]


def flops_per_token(model, config):
    """Training FLOPs per token, forward and backward: 6 per weight (a multiply and an add
    forward, twice that backward) plus attention's scores and weighted sum, 12 per layer,
    channel and context position, halved because causal attention computes only the lower
    triangle (PaLM, appendix B; bench/train_bench.py counts the same). Position embeddings are
    a lookup and left out; the tied token embedding counts once, as the head's matmul."""
    return 6 * model.num_params() + 6 * config.n_layer * config.embed_dim * config.context_len


def peak_flops(device, dtype, override=None):
    """One device's peak FLOP/s for MFU, or None when unknown (CPU, float32, a GPU not listed)."""
    if override:
        return override
    if device.type != "cuda" or dtype == torch.float32:
        return None
    return gpu_peak_flops(torch.cuda.get_device_name(device))


def gpu_peak_flops(name):
    """The 16-bit dense peak of the GPU called name (as torch.cuda.get_device_name says), or None."""
    return next((peak for pattern, peak in GPU_PEAK_FLOPS if re.search(pattern, name)), None)


def warn_if_slow_on_cpu(model, config, train, device):
    """The reference config needs a GPU: say so before the first step, not via a slow tqdm ETA.
    train: the TrainConfig (batch_size, grad_accum, max_iters)."""
    if device.type != "cpu":
        return
    tokens = train.batch_size * train.grad_accum * config.context_len
    flops = 6 * model.num_params() * tokens + 12 * config.n_layer * config.embed_dim * config.context_len * tokens
    a = torch.full((512, 512), 0.5)  # not randn: this must not move the RNG that dropout uses
    a @ a  # warm-up: the first product also starts the thread pool
    t0 = time.perf_counter()
    for _ in range(10):
        a @ a
    gemm_rate = 10 * 2 * 512**3 / (time.perf_counter() - t0)
    seconds = flops / (0.6 * gemm_rate) * train.max_iters  # a full step runs at ~60% of sgemm speed
    if seconds > 1800:
        print(f"Note: this config on this CPU takes roughly {flops / (0.6 * gemm_rate):.1f} s per iteration, "
              f"about {seconds / 3600:.0f} hours for {train.max_iters} iterations. "
              "`--preset cpu` trains a smaller model in about 5 minutes; a GPU runs this one in minutes.")
