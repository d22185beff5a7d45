"""Sampling text from a trained model for gpt_pretrain.py: prompt in, decoded text out.

With the KV cache (the default) the prompt is run through the model once and every new token
after it is one position attending to the keys and values kept from the earlier ones, instead
of a forward pass over the whole prefix per token. The tokens are the same (greedy decoding
gives exactly the uncached path's tokens; tests/test_sampling.py checks it), and at the
reference config it is several times faster (bench/sample_bench.py measures both in one run).
Once the text is longer than the context, each step sees the last context_len tokens at
positions 0..context_len-1, every position moves, and nothing cached is valid: those steps
run the full window, as the uncached loop does.
"""
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F


class SamplingError(Exception):
    """The model cannot be sampled from (its output is not a distribution)."""


class KVCache:
    """Keys and values of the tokens so far, for every layer: (n_layer, 2, B, n_head, context_len,
    head_size). GPT.forward(idx, kv_cache) appends idx's and advances .length."""

    def __init__(self, config, batch_size, device, dtype):
        head_size = config.embed_dim // config.n_head
        self.kv = torch.zeros(config.n_layer, 2, batch_size, config.n_head, config.context_len, head_size,
                              device=device, dtype=dtype)
        self.length = 0  # tokens cached (the positions of the next ones start here)

    def layer(self, i):
        return LayerCache(self, i)


class LayerCache:
    def __init__(self, cache, i):
        self.cache, self.i = cache, i

    def extend(self, k, v):
        """Store the new tokens' k, v (B, nh, T, hs) after the cached ones; return all of them."""
        start = self.cache.length
        end = start + k.size(2)
        keys, values = self.cache.kv[self.i]
        keys[:, :, start:end], values[:, :, start:end] = k, v
        return keys[:, :, :end], values[:, :, :end]


def next_token(logits, temperature, top_k, top_p, generator):
    """One token id per row of logits (B, V): greedy at temperature 0 or top-k 1, else sampled
    at the temperature from the top_k likeliest, then from the fewest whose probabilities
    reach top_p (nucleus sampling; the likeliest token always stays)."""
    if temperature == 0 or top_k == 1:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p  # the ones before already reach p
        probs = probs.scatter(-1, order, sorted_probs.masked_fill(outside, 0.0))
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)


@torch.no_grad()
def generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=1.0, generator=None,
             kv_cache=True):
    """Extend idx (B, T) by max_new_tokens tokens, one at a time (see the module's docstring)."""
    model.eval()
    context_len = model.config.context_len
    cache = None
    for i in range(max_new_tokens):
        if not kv_cache or idx.size(1) > context_len:
            logits = model(idx[:, -context_len:])  # the whole (cropped) window, every step
        elif cache is None:
            cache = KVCache(model.config, idx.size(0), idx.device, model.head.weight.dtype)
            logits = model(idx, cache)  # the prompt, once
        else:
            logits = model(idx[:, -1:], cache)  # the newest token alone
        logits = logits[:, -1, :]  # (B, V)
        if not torch.isfinite(logits).all():
            raise SamplingError(f"the model's output for new token {i + 1} is not finite (NaN or inf), "
                                "so it is no distribution to sample from: its weights are probably not finite")
        idx = torch.cat((idx, next_token(logits, temperature, top_k, top_p, generator)), dim=1)
    return idx


@dataclass
class SampleConfig:
    """What --sample (and the sample at the end of a run) draws: seeded, so the same seed gives the same text."""
    prompt: str = ""
    num_tokens: int = 300
    temperature: float = 0.8
    top_k: int = 50      # the k likeliest tokens (0: all)
    top_p: float = 1.0   # then the fewest whose probabilities add up to p (1: off)
    seed: int = 1337


def sample_text(model, tokenizer_path, sampling, device):
    """Sample from the model as SampleConfig says and decode with the run's tokenizer (token ids
    without one)."""
    tokenizer = None
    if tokenizer_path and os.path.exists(tokenizer_path):
        from tokenizers import Tokenizer
        tokenizer = Tokenizer.from_file(tokenizer_path)
    if tokenizer:
        eot = tokenizer.token_to_id("<|endoftext|>")
        prompt_ids = tokenizer.encode(sampling.prompt).ids if sampling.prompt else [eot if eot is not None else 0]
    else:
        try:
            prompt_ids = [int(t) for t in sampling.prompt.split()] if sampling.prompt else [0]
        except ValueError:
            raise ValueError(f"the prompt {sampling.prompt!r} is not token ids: this run has no tokenizer, so "
                             "give space-separated ids, e.g. --prompt \"1 2 3\".") from None
    if not prompt_ids or max(prompt_ids) >= model.config.vocab_size or min(prompt_ids) < 0:
        raise ValueError(f"the prompt {sampling.prompt!r} does not encode to ids below the vocab size.")
    idx = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(sampling.seed)
    out = generate(model, idx, sampling.num_tokens, sampling.temperature, sampling.top_k, sampling.top_p, generator)[0].tolist()
    if tokenizer:
        return tokenizer.decode(out, skip_special_tokens=False).replace("<|endoftext|>", "\n<|endoftext|>\n")
    return " ".join(map(str, out))
