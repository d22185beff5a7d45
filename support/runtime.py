"""Run-time hints for gpt_pretrain.py that are not part of training itself."""
import time

import torch


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
