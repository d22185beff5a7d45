"""Sampling speed with and without the KV cache (support/sampling.py), in the same run.

    python bench/sample_bench.py                  # the reference config, 256 new tokens, CPU
    python bench/sample_bench.py --device cuda

The model is the reference config (GPTConfig()) with its initial weights: the cost of a token
does not depend on the weights. Decoding is greedy, so both paths must produce the same tokens,
and this checks that they do. The two paths alternate for --rounds rounds (a machine shared with
other work slows both alike); tokens/s is the median over the rounds. Results go to
bench/results/sample_bench_<device>.json and .md.
"""
import argparse
import statistics

import torch

import common
from gpt_pretrain import GPT, GPTConfig
from support.sampling import generate


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device")
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--prompt-len", type=int, default=4, help="a short prompt (default 4 tokens)")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    device = common.pick_device(args.device)
    torch.manual_seed(0)
    config = GPTConfig()
    model = GPT(config).to(device).eval()
    prompt = torch.randint(0, config.vocab_size, (1, args.prompt_len), device=device)

    outputs = {}

    def path(kv_cache):
        def run():
            outputs[kv_cache] = generate(model, prompt, args.new_tokens, temperature=0.0, kv_cache=kv_cache)
        return run

    # uncached and cached alternate (after one untimed call each): a load change hits both alike
    _, info = common.round_robin_ms({False: path(False), True: path(True)}, device, rounds=args.rounds)
    assert torch.equal(outputs[True], outputs[False]), "the KV cache changed the greedy tokens"
    rates = {k: [args.new_tokens / (ms * 1e-3) for ms in times] for k, times in info["times"].items()}
    cached, uncached = statistics.median(rates[True]), statistics.median(rates[False])
    rows = [{"path": "uncached (the whole prefix every token)", "tokens_per_s": uncached, "speedup": 1.0},
            {"path": "KV cache", "tokens_per_s": cached, "speedup": cached / uncached}]
    columns = [("path", "path", "{}"), ("tokens_per_s", "tokens/s (median)", "{:,.1f}"),
               ("speedup", "vs uncached", "{:.2f}x")]
    notes = (f"Reference config ({config.n_layer} layers, {config.embed_dim} channels, context "
             f"{config.context_len}), greedy, {args.new_tokens} new tokens after a {args.prompt_len}-token "
             f"prompt, median of {args.rounds} alternating rounds; identical tokens checked. Past the "
             f"context ({config.context_len - args.prompt_len} new tokens in), the cached path runs the "
             "full window, as the uncached one does. Per round, cached/uncached: "
             + ", ".join(f"{c / u:.2f}x" for c, u in zip(rates[True], rates[False])) + ".")
    common.write_results("sample_bench", device, rows, columns, {}, notes)


if __name__ == "__main__":
    main()
