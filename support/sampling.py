"""Sampling text from a trained model for gpt_pretrain.py: prompt in, decoded text out."""
import os

import torch
import torch.nn.functional as F


@torch.no_grad()
def generate(model, idx, max_new_tokens, temperature=1.0, top_k=None):
    """Extend idx (B, T) by max_new_tokens sampled tokens, one at a time."""
    model.eval()
    for _ in range(max_new_tokens):
        logits = model(idx[:, -model.config.context_len:])[:, -1, :] / max(temperature, 1e-6)  # (B, V)
        if top_k:
            kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        next_id = torch.multinomial(F.softmax(logits.float(), dim=-1), num_samples=1)  # (B, 1)
        idx = torch.cat((idx, next_id), dim=1)
    return idx


def sample_text(model, tokenizer_path, args, device):
    """Sample from the model and decode with the run's tokenizer (token ids without one)."""
    tokenizer = None
    if tokenizer_path and os.path.exists(tokenizer_path):
        from tokenizers import Tokenizer
        tokenizer = Tokenizer.from_file(tokenizer_path)
    if tokenizer:
        eot = tokenizer.token_to_id("<|endoftext|>")
        prompt_ids = tokenizer.encode(args.prompt).ids if args.prompt else [eot if eot is not None else 0]
    else:
        prompt_ids = [int(t) for t in args.prompt.split()] if args.prompt else [0]
    if not prompt_ids or max(prompt_ids) >= model.config.vocab_size:
        raise ValueError(f"the prompt {args.prompt!r} does not encode to ids below the vocab size.")
    idx = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    out = generate(model, idx, args.num_tokens, args.temperature, args.top_k)[0].tolist()
    if tokenizer:
        return tokenizer.decode(out, skip_special_tokens=False).replace("<|endoftext|>", "\n<|endoftext|>\n")
    return " ".join(map(str, out))
