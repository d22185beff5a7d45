"""End-to-end training-step benchmark: the whole step (forward, backward, AdamW) of gpt_pretrain.py.

    python bench/train_bench.py                   # CPU: default config, fp32
    python bench/train_bench.py --device cuda     # GPU: default config and GPT-2 small, bf16 autocast
    python bench/train_bench.py --profile torch   # torch.profiler table of one variant's step

Rows: the PyTorch path, PyTorch with torch.compile, --kernels ext, and --kernels ext with
torch.compile (ext rows are left out, saying so, when the extension is not built). For each:
median ms per step over --steps timed steps after --warmup untimed ones, tokens/s, peak memory,
and on the GPU model FLOPs utilisation: 6 x parameters + attention FLOPs per token (the PaLM
count, causal attention counted as half the full (T, T) products), over the measured bf16 matmul
rate of this run and over the datasheet dense peak. Results go to bench/results/ as
train_bench_<device>.json and .md (with --shapes, --batch-size or --dropout in the name
when given, e.g. train_bench_gpt2-small_<device>, train_bench_b8_<device>).
"""
import argparse

import torch

import common
from common import add_tag_argument, device_name, matmul_tflops, peak_memory_bytes, pick_device, tagged, write_results
from gpt_pretrain import GPT, GPTConfig, TrainConfig, loss_function, make_optimizer

SHAPES = {
    "default": dict(config=GPTConfig(), batch_size=32),
    "gpt2-small": dict(config=GPTConfig(context_len=1024, vocab_size=50257, embed_dim=768, n_head=12,
                                        n_layer=12, ff_dim=3072, dropout=0.1), batch_size=16),
}
# Dense bf16 tensor-core peaks from the datasheets (no sparsity), for MFU's usual definition.
DATASHEET_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0}


def flops_per_token(config):
    n_params = sum(p.numel() for p in GPT(config).parameters()) - config.context_len * config.embed_dim
    attention = 6 * config.n_layer * config.embed_dim * config.context_len  # 12 L C T, halved for causal
    return 6 * n_params + attention


def make_step(config, batch_size, device, dtype, compile_model):
    """A closure that runs one full training step, as gpt_pretrain.py's loop does."""
    torch.manual_seed(0)
    model = GPT(config).to(device)
    optimizer = make_optimizer(model, TrainConfig(), device)
    train_model = torch.compile(model) if compile_model else model
    loss_fn = loss_function(config.kernels, dtype, overwrite_logits=True)  # as the loop does
    x = torch.randint(0, config.vocab_size, (batch_size, config.context_len), device=device)
    y = torch.randint(0, config.vocab_size, (batch_size, config.context_len), device=device)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    model.train()

    def step():
        with autocast:
            logits = train_model(x)
            loss = loss_fn(logits.view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", help="cuda or cpu (default: cuda when present)")
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), help="default: default (CPU), both (GPU)")
    parser.add_argument("--batch-size", type=int, help="override the batch size of every shape")
    parser.add_argument("--dropout", type=float, help="override the dropout (default config: 0.1)")
    parser.add_argument("--variants", nargs="+", default=["torch", "torch+compile", "ext", "ext+compile"])
    parser.add_argument("--steps", type=int, help="timed steps (default 20 GPU, 5 CPU)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--profile", metavar="VARIANT", help="print a torch.profiler table of one step of VARIANT")
    add_tag_argument(parser)
    args = parser.parse_args()
    device = pick_device(args.device)
    on_gpu = device.type == "cuda"
    dtype = torch.bfloat16 if on_gpu else torch.float32
    steps = args.steps or (20 if on_gpu else 5)
    shapes = args.shapes or (["default", "gpt2-small"] if on_gpu else ["default"])
    have_ext = common.load_kernels() is not None

    if args.profile:
        spec = SHAPES[shapes[0]]
        config = GPTConfig(**{**spec["config"].__dict__, "kernels": args.profile.split("+")[0],
                              **({"dropout": args.dropout} if args.dropout is not None else {})})
        step = make_step(config, args.batch_size or spec["batch_size"], device, dtype, "compile" in args.profile)
        for _ in range(args.warmup):
            step()
        from torch.profiler import ProfilerActivity, profile
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
        with profile(activities=activities) as prof:
            step()
        print(prof.key_averages().table(sort_by="cuda_time_total" if on_gpu else "cpu_time_total", row_limit=40))
        return

    matmul_rate = matmul_tflops(device)
    datasheet = next((v for k, v in DATASHEET_TFLOPS.items() if k in device_name(device)), None) if on_gpu else None
    rows = []
    for shape in shapes:
        spec = SHAPES[shape]
        batch_size = args.batch_size or spec["batch_size"]
        configs, step_fns = {}, {}
        for variant in args.variants:
            kernels = variant.split("+")[0]
            if kernels == "ext" and not have_ext:  # load_kernels said why
                print(f"skipping {variant}")
                continue
            configs[variant] = GPTConfig(**{**spec["config"].__dict__, "kernels": kernels,
                                            **({"dropout": args.dropout} if args.dropout is not None else {})})
            step_fns[variant] = make_step(configs[variant], batch_size, device, dtype, "compile" in variant)
        # Timed in rounds, one step of each variant per round, so that a shared machine whose
        # load changes during the run slows every variant alike and same-run ratios hold; each
        # variant first runs warmup + 1 untimed steps (compiles).
        medians, _ = common.round_robin_ms(step_fns, device, rounds=steps, warmup=args.warmup + 1)
        torch_tokens_per_s = None
        for variant, step in step_fns.items():
            config = configs[variant]
            ms = medians[variant]
            peak = peak_memory_bytes(step, device)
            tokens_per_s = batch_size * config.context_len / (ms * 1e-3)
            if variant == "torch":
                torch_tokens_per_s = tokens_per_s
            achieved = flops_per_token(config) * tokens_per_s / 1e12
            rows.append({"shape": shape, "variant": variant, "batch": batch_size, "dropout": config.dropout,
                         "ms_per_step": ms, "tokens_per_s": tokens_per_s,
                         "vs_torch": tokens_per_s / torch_tokens_per_s if torch_tokens_per_s else None,
                         "model_tflops": achieved, "mfu_measured": achieved / matmul_rate,
                         "mfu_datasheet": achieved / datasheet if datasheet else None,
                         "peak_mb": peak / 2**20})
            print(rows[-1])
        del step_fns
        if on_gpu:
            torch.cuda.empty_cache()
    columns = [("shape", "shape", ""), ("variant", "variant", ""), ("batch", "batch", ""),
               ("dropout", "dropout", ""), ("ms_per_step", "ms/step", "{:.1f}"),
               ("tokens_per_s", "tokens/s", "{:,.0f}"), ("vs_torch", "vs torch", "{:.2f}x"),
               ("model_tflops", "model TFLOP/s", "{:.3f}"), ("mfu_measured", "of measured matmul", "{:.1%}"),
               ("mfu_datasheet", "MFU (datasheet)", "{:.1%}"), ("peak_mb", "peak MB", "{:,.0f}")]
    limits = {"matmul_tflops": matmul_rate}
    if datasheet:
        limits["datasheet_tflops"] = datasheet
    # A run with other settings than the defaults gets its own file, so it never replaces the table.
    name = "train_bench" + (f"_{'-'.join(args.shapes)}" if args.shapes else "") + \
        (f"_b{args.batch_size}" if args.batch_size else "") + \
        (f"_p{args.dropout:g}" if args.dropout is not None else "")
    write_results(tagged(name, args.tag), device, rows, columns, limits,
                  notes=f"Full step: forward, backward, grad clip, AdamW; {dtype} "
                        f"{'autocast' if on_gpu else ''}; median of {steps} steps after {args.warmup} warm-up, "
                        f"variants timed in interleaved rounds.")


if __name__ == "__main__":
    main()
