"""Pre-train a GPT from scratch, in one file you can read top to bottom.

    python gpt_pretrain.py --preset cpu             # ~5 minutes on a 2-core CPU, then a sample
    python gpt_pretrain.py --iters 20000            # the reference config (wants a GPU)
    python gpt_pretrain.py --resume                 # continue the run in --out-dir
    python gpt_pretrain.py --sample --prompt "def " # sample from the run's checkpoint
    python gpt_pretrain.py --kernels ext            # fused kernels from csrc/ (pip install -e .)
    python gpt_pretrain.py --export-hf hf_model     # the run as a transformers GPT-2 folder
    python gpt_pretrain.py --init-from gpt2 --sample  # start from GPT-2's weights (a folder or hub name)

Sections: config, data, model, training helpers (schedule, evaluation, checkpoints,
sampling), then main() with the training loop. With no --data the default corpus (this
Python's standard library source, tokenized by data/prepare.py) is prepared on first use.
"""
import argparse
import contextlib
import datetime
import json
import math
import os
import re
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from data.shards import ShardError, is_shard, largest_id, read_shard
from support.distributed import gather_from_ranks, sum_over_ranks
from support.files import WriteError, write_atomically
from support.guards import SpikeDetector
from support.loggers import LOGGERS, MetricsLog
from support.plots import plot_losses
from support.hf import HFError
from support.runtime import flops_per_token, peak_flops, warn_if_slow_on_cpu
from support.sampling import SampleConfig, SamplingError, sample_text

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.join(HERE, "data", "stdlib")


class UsageError(Exception):
    """Bad input from the user: main() prints the message and exits with status 2."""


# Exit statuses besides 0 and 2 (bad input): the run diverged (non-finite loss, gradients or
# weights), a file of the run could not be written (disk full...), Ctrl-C.
EXIT_DIVERGED, EXIT_WRITE_FAILED, EXIT_INTERRUPTED = 3, 4, 130


class RunStopped(Exception):
    """The run cannot go on: main() prints the message (one line) and exits with .status."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


# ----------------------------------------------------------------------------- config

@dataclass
class GPTConfig:
    context_len: int = 256
    vocab_size: int = 1000
    embed_dim: int = 384
    n_head: int = 6
    n_layer: int = 6
    ff_dim: int = 4 * 384
    dropout: float = 0.1
    attention: str = "sdpa"   # "sdpa": F.scaled_dot_product_attention; "explicit": written out
    kernels: str = "torch"    # "torch": pure PyTorch; "ext": the fused kernels of gpt_kernels
    gelu: str = "exact"       # "exact": erf GELU; "tanh": its tanh approximation (GPT-2's weights)


@dataclass
class TrainConfig:
    """The training hyperparameters: the reference ones, plus what users of such tools expect.
    Saved in the checkpoint, so --resume continues with the same ones."""
    batch_size: int = 32
    learning_rate: float = 3e-4
    max_iters: int = 20000
    grad_accum: int = 1           # micro-batches per step
    lr_schedule: str = "cosine"   # "cosine": down to min_lr at max_iters; "constant" after warm-up
    warmup_iters: int = 200
    min_lr: float = 3e-5
    weight_decay: float = 0.1
    grad_clip: float = 1.0        # the largest gradient norm (0: no clipping)
    eval_interval: int = 500
    eval_iters: int = 50
    ckpt_interval: int = 1000
    log_interval: int = 10
    seed: int = 1337


# --preset cpu: a model small enough to learn visibly in minutes on 2 cores (the reference
# config needs about 5 s per iteration there, i.e. a day for 20000 iterations).
PRESETS = {
    "cpu": dict(context_len=128, embed_dim=192, n_head=6, n_layer=4, ff_dim=768, dropout=0.0,
                batch_size=32, learning_rate=2e-3, max_iters=600, warmup_iters=50,
                min_lr=2e-4, eval_interval=200, eval_iters=10, ckpt_interval=200),
}


# ----------------------------------------------------------------------------- data

class DataError(UsageError):
    """Token data that cannot be trained on as given (main() exits with status 2)."""


class TokenDataset(Dataset):
    """Every window of context_len tokens: x = tokens[i:i+C], y = the same shifted by one.
    The tokens are one array or a list of shards (np.memmap each: a corpus may be far larger
    than RAM); windows stay inside a shard, as documents end at shard boundaries anyway."""

    def __init__(self, tokens, context_len, vocab_size=None):
        self.shards = [tokens] if isinstance(tokens, np.ndarray) else list(tokens)
        self.context_len, self.vocab_size = context_len, vocab_size
        self.ends = np.cumsum([max(0, len(s) - context_len) for s in self.shards])  # windows so far
        self.num_tokens = sum(len(s) for s in self.shards)

    def __len__(self):
        return int(self.ends[-1]) if len(self.ends) else 0

    def __getitem__(self, i):
        if not 0 <= i < len(self):
            raise IndexError(f"window {i} of {len(self)}")
        shard = int(np.searchsorted(self.ends, i, side="right"))
        start = i - (int(self.ends[shard - 1]) if shard else 0)
        chunk = torch.from_numpy(self.shards[shard][start:start + self.context_len + 1].astype(np.int64))
        if self.vocab_size is not None and int(chunk.max()) >= self.vocab_size:  # data not checked at start
            at = start + int(torch.argmax((chunk >= self.vocab_size).int()))
            raise DataError(f"the data holds token id {int(chunk.max())} (shard {shard}, token {at}), "
                            f"but the vocab size is {self.vocab_size}: pass --vocab-size {int(chunk.max()) + 1} or more.")
        return chunk[:-1], chunk[1:]  # x (C,), y (C,)


def permute(positions, n, key, rounds=4):
    """A seeded bijection on [0, n), evaluated only where asked: a Feistel network on the fewest
    even number of bits that covers n, and values that land outside [0, n) are walked on
    through it until they land inside (cycle-walking keeps it a bijection). O(1) memory, where
    torch.randperm(n) would hold n indices: ~8 bytes a token of the corpus."""
    half = max(1, ((n - 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half) - 1)
    keys = np.random.SeedSequence([k % 2**64 for k in key]).generate_state(rounds, np.uint64)

    def feistel(x):
        left, right = x >> np.uint64(half), x & mask
        for k in keys:  # each round: (L, R) -> (R, L xor F(R)), F a splitmix64 finaliser
            z = (right ^ k) * np.uint64(0x9E3779B97F4A7C15)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            left, right = right, left ^ ((z ^ (z >> np.uint64(31))) & mask)
        return (left << np.uint64(half)) | right

    x = feistel(np.asarray(positions, dtype=np.uint64))
    outside = x >= n
    while outside.any():
        x[outside] = feistel(x[outside])
        outside = x >= n
    return x.astype(np.int64)


class EpochShuffler(Sampler):
    """DataLoader(shuffle=True)'s order, made resumable and free of memory: epoch e visits the
    windows in the order of a permutation seeded by (seed, e), computed per index, so a resumed
    run starts mid-epoch exactly where the checkpoint stopped instead of replaying or skipping
    batches. Under torchrun, rank r of w takes every w-th window of that order (as
    DistributedSampler does), so the ranks together cover the epoch once and a step of w ranks
    at batch b sees the same windows as one process at batch w * b."""

    def __init__(self, n, seed, epoch=0, start=0, rank=0, world=1):
        self.n, self.seed, self.epoch, self.start = n, seed, epoch, start
        self.rank, self.world = rank, world

    def __iter__(self):
        epoch, start = self.epoch, self.start
        self.epoch, self.start = epoch + 1, 0
        return self.windows(epoch, start)

    def windows(self, epoch, start, chunk=8192):
        for first in range(start, len(self), chunk):
            positions = np.arange(first, min(first + chunk, len(self))) * self.world + self.rank
            yield from permute(positions, self.n, (self.seed, epoch)).tolist()

    def __len__(self):
        return self.n // self.world


def cycle(dataloader):
    while True:
        yield from dataloader


@dataclass
class TokenData:
    """What --data names: the token arrays of each split (np.memmap each, never read whole)."""
    location: str
    train: list
    val: list | None            # None: the last 10% of the one train array is held out
    tokenizer: str | None = None
    vocab_size: int | None = None   # what meta.json says; else --vocab-size decides
    max_id: int | None = None       # the largest id, when meta.json says it (else it is checked)


def raw_tokens(path, what):
    """A file of raw uint16 ids (np.array(ids, dtype=np.uint16).tofile(path) writes one)."""
    if not os.path.isfile(path):
        raise DataError(f"{what} file {path} does not exist. Make a dataset with data/prepare.py "
                        "or give a raw uint16 .bin file with --data.")
    size = os.path.getsize(path)
    if size == 0:
        raise DataError(f"{what} file {path} is empty.")
    if size % 2:
        raise DataError(f"{what} file {path} has an odd size ({size} bytes): it is neither a token shard "
                        "(llm.c's header) nor raw uint16 token ids.")
    return np.memmap(path, dtype=np.uint16, mode="r")


def read_shards(paths, expected_tokens=None):
    try:
        shards = [read_shard(p) for p in paths]
    except ShardError as e:
        raise DataError(str(e)) from None
    for path, shard, expected in zip(paths, shards, expected_tokens or [None] * len(paths)):
        if expected is not None and len(shard) != expected:
            raise DataError(f"{path} holds {len(shard):,} tokens, its meta.json says {expected:,}: "
                            "the folder is not the one prepare.py wrote; prepare it again.")
    return shards


def open_folder(folder):
    """A dataset folder: data/prepare.py's (meta.json), or llm.c's shards without one."""
    meta_path = os.path.join(folder, "meta.json")
    if not os.path.exists(meta_path):
        names = sorted(n for n in os.listdir(folder) if n.endswith(".bin"))
        shards = {split: [os.path.join(folder, n) for n in names if re.search(rf"(^|[_.-]){split}([_.-]|$)", n)]
                  for split in ("train", "val")}
        if not shards["train"]:
            raise DataError(f"{folder} is not a dataset folder: no meta.json, and no .bin shards with 'train' "
                            "in their names (llm.c's layout). Make one with "
                            f"`python data/prepare.py --source YOUR_TEXT --out {folder}`.")
        return TokenData(folder, read_shards(shards["train"]), read_shards(shards["val"]) or None)
    with open(meta_path) as f:
        meta = json.load(f)
    tokenizer = os.path.join(folder, meta.get("tokenizer", "tokenizer.json"))
    data = TokenData(folder, [], None, tokenizer if os.path.exists(tokenizer) else None, meta["vocab_size"])
    if "splits" not in meta:  # a folder from before shards: raw uint16 train.bin and val.bin
        data.train, data.val = [raw_tokens(os.path.join(folder, "train.bin"), "training data")], \
            [raw_tokens(os.path.join(folder, "val.bin"), "validation data")]
        return data
    try:
        splits = {split: meta["splits"][split] for split in ("train", "val")}
        data.train, data.val = ([read_shards([os.path.join(folder, s["file"]) for s in splits[split]["shards"]],
                                             [s["tokens"] for s in splits[split]["shards"]]) or None
                                 for split in ("train", "val")])
        data.max_id = max(splits[split]["max_id"] for split in ("train", "val"))
    except (KeyError, TypeError) as e:
        raise DataError(f"{meta_path} is incomplete or not data/prepare.py's (no {e} in it): prepare the "
                        "folder again.") from None
    if not data.train:
        raise DataError(f"{meta_path} lists no training shards: prepare the folder again.")
    return data


def find_dataset(data, vocab_size):
    """Resolve --data (a dataset folder, a shard or a raw uint16 file; None: the default corpus,
    prepared on first use) into TokenData."""
    if data is None and not os.path.exists(os.path.join(DEFAULT_DATA, "meta.json")):
        print(f"Preparing the default corpus (this Python's standard library source) in {DEFAULT_DATA}. "
              "This happens once and takes about a minute.")
        from data.prepare import PrepareError, prepare
        try:
            prepare(out_dir=DEFAULT_DATA, vocab_size=vocab_size)
        except PrepareError as e:
            raise UsageError(str(e)) from None
    data = data or DEFAULT_DATA
    if os.path.isdir(data):
        return open_folder(data)
    if os.path.isfile(data):  # one file: its last 10% is held out for validation (make_datasets)
        return TokenData(data, read_shards([data]) if is_shard(data) else [raw_tokens(data, "training data")], None)
    raise UsageError(f"--data {data} does not exist: give a dataset folder from data/prepare.py, "
                     "a folder of llm.c shards, or a token file (.bin).")


def check_token_ids(data, vocab_size, skip):
    """Every id must be below vocab_size. meta.json knows the largest; other files are read once,
    in chunks, with progress (--skip-data-check: not at all, and a bad id stops the run when a
    window holding it is drawn)."""
    if data.max_id is None and skip:
        return
    if data.max_id is None:
        arrays = data.train + (data.val or [])
        with tqdm(total=sum(len(a) for a in arrays), desc="checking token ids", unit="tok", unit_scale=True,
                  disable=sum(len(a) for a in arrays) < 1 << 27) as bar:
            data.max_id = max(largest_id(a.filename, a.dtype, a.offset, len(a), progress=bar.update) for a in arrays)
    if data.max_id >= vocab_size:
        raise DataError(f"{data.location} holds token id {data.max_id}, but the vocab size is {vocab_size}: "
                        f"pass --vocab-size {data.max_id + 1} or more.")


def make_datasets(data, context_len, vocab_size):
    train, val = data.train, data.val
    if max(len(a) for a in train) < context_len + 1:
        raise DataError(f"{data.location} has {max(len(a) for a in train)} tokens in its largest training file, "
                        f"fewer than context_len + 1 = {context_len + 1}: use more text or a smaller --context-len.")
    if val is None:
        if len(train) > 1:
            raise DataError(f"{data.location} has no validation shards (files with 'val' in their names).")
        cut = int(len(train[0]) * 0.9)
        if cut < context_len + 1 or len(train[0]) - cut < context_len + 1:
            raise DataError(f"{data.location} has {len(train[0])} tokens: too few to hold out 10% for "
                            f"validation with --context-len {context_len}.")
        train, val = [train[0][:cut]], [train[0][cut:]]
    datasets = TokenDataset(train, context_len, vocab_size), TokenDataset(val, context_len, vocab_size)
    for what, dataset in zip(("training", "validation"), datasets):
        if len(dataset) == 0:
            raise DataError(f"the {what} data of {data.location} has no shard with context_len + 1 = "
                            f"{context_len + 1} tokens or more: use more text or a smaller --context-len.")
    return datasets


# ----------------------------------------------------------------------------- model

def dropout_add(x, residual, p, training, kernels):
    """residual + dropout(x, p), or dropout(x, p) when residual is None. With --kernels ext one
    kernel (csrc/dropout_add.cpp) draws the mask from a Philox counter while it adds, and the
    backward regenerates the mask instead of storing it: no bernoulli_ pass, no mask tensor."""
    if kernels == "ext":
        return torch.ops.gpt_kernels.dropout_add(x, residual, p if training else 0.0)
    x = F.dropout(x, p, training)
    return x if residual is None else residual + x


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head, self.dropout = config.n_head, config.dropout
        self.attention, self.kernels = config.attention, config.kernels
        self.qkv = nn.Linear(config.embed_dim, 3 * config.embed_dim)
        self.proj = nn.Linear(config.embed_dim, config.embed_dim)
        self.proj.is_residual_projection = True
        self.attn_dropout = nn.Dropout(config.dropout)
        mask = torch.tril(torch.ones(config.context_len, config.context_len, dtype=torch.bool))
        self.register_buffer("causal_mask", mask.view(1, 1, config.context_len, config.context_len),
                             persistent=False)

    def forward(self, x, layer_cache=None):
        B, T, C = x.shape
        qkv = self.qkv(x)  # (B, T, 3C)
        dropout_p = self.dropout if self.training else 0.0
        if self.kernels == "ext" and layer_cache is None:
            # FlashAttention-style kernel with in-kernel dropout (csrc/causal_attention.cpp) that
            # reads the heads out of qkv and writes them side by side: no transposes, no copies
            return self.proj(torch.ops.gpt_kernels.causal_attention_qkv(qkv, self.n_head, dropout_p))
        q, k, v = qkv.split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if layer_cache is not None:  # sampling: the new tokens also attend to the cached ones
            k, v = layer_cache.extend(k, v)  # (B, nh, L, hs), the new tokens the last T of L
        L = k.size(2)
        if self.attention == "sdpa":
            mask = None if L == T or T == 1 else self.causal_mask[:, :, L - T:L, :L]  # one new token sees all
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=L == T)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))  # (B, nh, T, L)
            att = att.masked_fill(~self.causal_mask[:, :, L - T:L, :L], float("-inf"))
            att = self.attn_dropout(F.softmax(att, dim=-1))
            y = att @ v  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble the heads side by side
        return self.proj(y)  # its residual dropout is applied in Block, fused with the add


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.fc = nn.Linear(config.embed_dim, config.ff_dim)
        self.proj = nn.Linear(config.ff_dim, config.embed_dim)
        self.proj.is_residual_projection = True
        self.approximate = "tanh" if config.gelu == "tanh" else "none"  # F.gelu's name for it
        self.linear_bias_gelu = None
        if config.kernels == "ext":  # a bias-free matmul, then bias + GELU in one pass (csrc/bias_gelu.cpp)
            from gpt_kernels import linear_bias_gelu
            self.linear_bias_gelu = linear_bias_gelu

    def forward(self, x):
        if self.linear_bias_gelu:
            h = self.linear_bias_gelu(x, self.fc.weight, self.fc.bias, self.approximate)
        else:
            h = F.gelu(self.fc(x), approximate=self.approximate)  # (B, T, ff_dim)
        return self.proj(h)


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.embed_dim)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.embed_dim)
        self.mlp = MLP(config)
        self.dropout, self.kernels = config.dropout, config.kernels

    def forward(self, x, layer_cache=None):
        # pre-LayerNorm: the residual stream stays un-normalised; x + dropout(branch)
        x = dropout_add(self.attn(self.ln1(x), layer_cache), x, self.dropout, self.training, self.kernels)
        x = dropout_add(self.mlp(self.ln2(x)), x, self.dropout, self.training, self.kernels)
        return x


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.token_emb = nn.Embedding(config.vocab_size, config.embed_dim)
        self.pos_emb = nn.Embedding(config.context_len, config.embed_dim)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.embed_dim)
        self.head = nn.Linear(config.embed_dim, config.vocab_size, bias=False)
        self.head.weight = self.token_emb.weight  # tied: one matrix reads and writes tokens
        self.apply(self._init_weights)

    def _init_weights(self, module):
        # GPT-2: N(0, 0.02), and the projections that add into the residual stream scaled by
        # 1/sqrt(2 * n_layer) so the stream's variance does not grow with depth.
        if isinstance(module, nn.Linear):
            std = 0.02 / math.sqrt(2 * self.config.n_layer) if getattr(module, "is_residual_projection", False) else 0.02
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, kv_cache=None):
        """Logits (B, T, vocab_size) for idx (B, T). With a KVCache (sampling, support/sampling.py)
        idx continues the tokens cached so far, whose keys and values are reused, not recomputed."""
        B, T = idx.shape
        start = kv_cache.length if kv_cache is not None else 0
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.token_emb(idx) + self.pos_emb(pos)  # (B, T, C)
        x = dropout_add(x, None, self.config.dropout, self.training, self.config.kernels)
        for i, block in enumerate(self.blocks):
            x = block(x, kv_cache.layer(i) if kv_cache is not None else None)
        if kv_cache is not None:
            kv_cache.length += T
        return self.head(self.ln_f(x))  # (B, T, vocab_size)

    def num_params(self):
        return sum(p.numel() for p in self.parameters()) - self.pos_emb.weight.numel()


def loss_function(kernels, dtype=torch.float32, overwrite_logits=False):
    """The loss of the loop: F.cross_entropy, or the fused kernel that writes the gradient while
    computing the loss (csrc/cross_entropy.cpp). overwrite_logits: the caller's logits are dead
    after the loss (as in the loop), so the gradient may take their memory (cross_entropy_inplace:
    no second N x V buffer); not in float16, whose backward recomputes from the logits under a
    GradScaler's factor. Without grad (evaluation) both are the plain loss."""
    if kernels != "ext":
        return F.cross_entropy
    import gpt_kernels
    if overwrite_logits and dtype != torch.float16:
        return gpt_kernels.cross_entropy_inplace
    return torch.ops.gpt_kernels.cross_entropy


def check_kernels(config, device, dtype):
    """--kernels ext: the compiled library must load and take this model on this device."""
    if config.kernels != "ext":
        return
    try:
        import gpt_kernels
    except ImportError as e:
        raise UsageError(f"--kernels ext needs the compiled extension: {e} (in {HERE}). "
                         "Or use --kernels torch, which needs no extension.") from None
    # the activations' dtype: autocast's on CUDA, else the parameters' float32 (see precision)
    reason = gpt_kernels.unsupported(head_size=config.embed_dim // config.n_head, device_type=device.type,
                                     dtype=dtype if device.type == "cuda" else torch.float32)
    if reason:
        raise UsageError(f"--kernels ext: {reason}. Or use --kernels torch (the default).")


# ----------------------------------------------------------------------------- training helpers

def learning_rate_at(step, train):
    """Linear warmup, then cosine decay to min_lr at max_iters (or constant after warmup)."""
    if step < train.warmup_iters:
        return train.learning_rate * (step + 1) / train.warmup_iters
    if train.lr_schedule == "constant":
        return train.learning_rate
    progress = min(1.0, (step - train.warmup_iters) / max(1, train.max_iters - train.warmup_iters))
    return train.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (train.learning_rate - train.min_lr)


def make_optimizer(model, train, device):
    # Weight decay on the matrices (weights and embeddings) only: decaying biases and LayerNorm
    # gains pulls them to zero for no regularisation benefit.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": train.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=train.learning_rate, betas=(0.9, 0.95),
                             fused=device.type == "cuda")


def precision(device, dtype_name):
    """(dtype, autocast context, GradScaler): bfloat16 autocast on CUDA by default, float32 elsewhere."""
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
        dtype_name or ("bfloat16" if device.type == "cuda" else "float32")]
    # autocast on CUDA only (a disabled torch.autocast("mps") raises on older torch)
    use_autocast = device.type == "cuda" and dtype != torch.float32
    autocast = torch.autocast(device.type, dtype=dtype) if use_autocast else contextlib.nullcontext()
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and dtype == torch.float16)
    return dtype, autocast, scaler


def make_batches(train_set, train, step, checkpoint, rank, world):
    """An endless stream of (x, y) batches. Each rank reads its own share of each epoch's order;
    where to start follows from how many windows the checkpoint's run consumed (whatever its
    number of ranks), so a resumed run sees exactly the batches it would have seen."""
    sampler = EpochShuffler(len(train_set), train.seed, rank=rank, world=world)
    windows_per_epoch = len(sampler) // train.batch_size * train.batch_size
    if windows_per_epoch == 0:
        raise UsageError(f"the training data has {len(train_set)} windows, fewer than --batch-size "
                         f"{train.batch_size} x {world} ranks.")
    seen = step * train.grad_accum * train.batch_size * (checkpoint or {}).get("world_size", world) // world
    sampler.epoch, sampler.start = divmod(seen, windows_per_epoch)
    # The loader's own generator keeps it from drawing on the global RNG that dropout uses.
    loader = DataLoader(train_set, batch_size=train.batch_size, sampler=sampler, drop_last=True,
                        generator=torch.Generator().manual_seed(train.seed))
    return cycle(loader)


@torch.no_grad()
def evaluate(model, datasets, eval_starts, loss_fn, device, autocast):
    """Mean loss over the same fixed windows every time, so evaluations are comparable."""
    model.eval()
    losses = {}
    for split, dataset in datasets.items():
        total = 0.0
        for starts in eval_starts[split]:  # one batch of window starts
            x, y = (torch.stack(t).to(device) for t in zip(*(dataset[i] for i in starts)))
            with autocast:
                logits = model(x)
            total += loss_fn(logits.view(-1, logits.size(-1)).float(), y.view(-1)).item()
        losses[split] = total / len(eval_starts[split])
    model.train()
    return losses


def guard(step_loss, grad_norm, spikes, scaler, world):
    """(loss, grad norm, why the step must not be applied or None). A step with a non-finite loss
    or gradient norm, or (--skip-spikes) a loss spike, is skipped. Every rank must decide alike:
    the gradient norm is the same on every rank (and a non-finite loss anywhere makes it
    non-finite), a rank's own loss is not, so under torchrun the loss counts only as its mean
    over the ranks: one small all-reduce, paid only where the loss must be looked at
    (--skip-spikes; float16, whose overflowing gradients are the GradScaler's to skip)."""
    if world > 1 and not (spikes or scaler.is_enabled()):
        loss_now, norm_now = None, grad_norm.item()
    else:
        mean_loss = step_loss if world == 1 else sum_over_ranks(step_loss, world) / world
        loss_now, norm_now = torch.stack([mean_loss, grad_norm.float()]).tolist()  # one host sync
    if (loss_now is not None and not math.isfinite(loss_now)) or \
            (not math.isfinite(norm_now) and not scaler.is_enabled()):
        return loss_now, norm_now, "non-finite"
    if spikes and spikes.is_spike(loss_now):
        return loss_now, norm_now, "spike"
    return loss_now, norm_now, None


def save_checkpoint(path, state):
    """Write atomically: a crash, a kill -9 or a full disk mid-write leaves the previous
    checkpoint intact and no temp file (a write error raises WriteError, saying why)."""
    write_atomically(path, lambda f: torch.save(state, f), "the checkpoint")


def all_finite(*modules_or_optimizers):
    """Whether every weight (and optimizer moment) is finite: checked before a checkpoint."""
    tensors = [p for m in modules_or_optimizers if isinstance(m, nn.Module) for p in m.parameters()]
    tensors += [t for m in modules_or_optimizers if isinstance(m, torch.optim.Optimizer)
                for state in m.state.values() for t in state.values() if torch.is_tensor(t)]
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def load_checkpoint(path, flag="--resume"):
    if not os.path.exists(path):
        raise UsageError(f"{flag}: no checkpoint at {path}. Point --out-dir at the folder of an "
                         "earlier run" + (", or start a run without --resume." if flag == "--resume" else "."))
    try:
        # weights_only: a checkpoint from elsewhere must not be able to run code when loaded
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UsageError(f"cannot read checkpoint {path}: {e}") from None


def check_data_fits(pretrained, data, config):
    """--init-from with a dataset folder: the same tokenizer, and no ids past the model's vocab."""
    from support.hf import same_vocabulary
    if data.tokenizer and pretrained["tokenizer"] and not same_vocabulary(data.tokenizer, pretrained["tokenizer"]):
        raise UsageError(f"--init-from {pretrained['source']}: the dataset's tokenizer ({data.tokenizer}) is not "
                         f"the model's ({pretrained['tokenizer']}), so its token ids mean other text. "
                         "Prepare the text with the model's tokenizer: python data/prepare.py --tokenizer FILE.")
    if data.vocab_size and data.vocab_size > config.vocab_size:
        raise UsageError(f"--init-from {pretrained['source']}: the dataset has a vocabulary of {data.vocab_size} "
                         f"tokens, the model {config.vocab_size}.")


def export_hf(source, config, out):
    """--export-hf DIR: the checkpoint (or --init-from's model) as a transformers GPT-2 folder."""
    from support.hf import export_hf as write_gpt2
    # the checkpoint's own config too: an option GPTConfig no longer has must not vanish silently
    files = write_gpt2(source["model"], {**source["config"], **asdict(config)}, source.get("tokenizer"), out)
    print(f"wrote {out}: {', '.join(files)}")
    if not source.get("tokenizer"):
        print("note: the run has no tokenizer (raw .bin data): only the model was exported.")
    print(f"load it with transformers.AutoModelForCausalLM.from_pretrained({out!r})")


def print_sample(model, tokenizer_path, sampling, device):
    try:
        print(sample_text(model, tokenizer_path, sampling, device))
    except ValueError as e:  # a prompt the model's vocabulary cannot express
        raise UsageError(str(e)) from None
    except SamplingError as e:  # a model whose output is no distribution (NaN or inf)
        raise RunStopped(f"cannot sample: {e}", EXIT_DIVERGED) from None


class Run:
    """What a run leaves behind, and how it stops: the progress bar, the metrics log (rank 0),
    checkpoints (only ever with finite weights), the guards' verdicts, Ctrl-C (finish the step,
    write a checkpoint, exit; under torchrun at the next log step, where the ranks agree), and
    one line saying why when the run cannot go on."""

    def __init__(self, ckpt_path, is_main, world, checkpoint, max_iters, log):
        self.ckpt_path, self.is_main, self.world, self.log = ckpt_path, is_main, world, log
        self.saved_step = checkpoint["step"] if checkpoint else None  # the last good checkpoint
        if is_main and not checkpoint and os.path.exists(ckpt_path):
            print(f"note: {ckpt_path} exists and will be replaced by this new run (use --resume to continue it)")
        self.stop_requested, self.stopped = [], False
        self.nonfinite_in_a_row, self.skipped_steps = 0, 0
        self.bar = tqdm(total=max_iters, initial=checkpoint["step"] if checkpoint else 0, desc="training",
                        dynamic_ncols=True, disable=not is_main, mininterval=0.5 if sys.stderr.isatty() else 10)
        signal.signal(signal.SIGINT, self.on_sigint)

    def on_sigint(self, signum, frame):
        self.stop_requested.append(True)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once

    def last_good(self):
        if self.saved_step is None:
            return "No checkpoint of this run was written."
        return f"The last good checkpoint is {self.ckpt_path} (iteration {self.saved_step}); continue with --resume."

    def close(self):
        self.bar.close()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if self.is_main:
            self.log.close()

    def stop(self, message, status):
        self.close()
        raise RunStopped(f"{message}. {self.last_good()}", status)

    def write(self, write, *write_args):
        """A write of the run's files (rank 0); if it fails (disk full...) the run ends with one line."""
        if not self.is_main:
            return
        try:
            write(*write_args)
        except WriteError as e:
            self.stop(str(e), EXIT_WRITE_FAILED)

    def record(self, metrics):
        if self.is_main:
            self.write(self.log.write, metrics)

    def say(self, line):
        if self.is_main:
            self.bar.write(line)

    def after_step(self, step, skip, loss_now, norm_now, max_nonfinite):
        """Count the step; report a skipped one; stop after max_nonfinite non-finite steps in a row."""
        self.bar.update(1)
        self.nonfinite_in_a_row = self.nonfinite_in_a_row + 1 if skip == "non-finite" else 0
        if skip:
            self.skipped_steps += 1
            loss_text = "" if loss_now is None else f"loss {loss_now:.4g}, "
            self.say(f"iter {step}: {skip} step ({loss_text}grad norm {norm_now:.4g}), not applied")
            self.record({"iter": step, "skipped": skip, "grad_norm": norm_now,
                         **({} if loss_now is None else {"loss": loss_now})})
        if self.nonfinite_in_a_row == max_nonfinite:
            first = step - self.nonfinite_in_a_row + 1
            where = f"iteration {step}" if first == step else f"iterations {first} to {step}"
            self.stop(f"training diverged: the loss or gradient norm was not finite at {where} (--max-nonfinite "
                      f"{max_nonfinite}), and those updates were not applied. Lower --learning-rate or "
                      "--grad-clip", EXIT_DIVERGED)
        if self.world == 1:  # under torchrun the ranks agree on stopping at a log step
            self.stopped = bool(self.stop_requested)

    def checkpoint(self, step, state_of_ranks, weights_finite):
        """Never replace the last good checkpoint with weights that are not finite, or that just gave
        a non-finite loss (every rank holds the same weights: every rank decides alike)."""
        if self.nonfinite_in_a_row:
            self.say(f"iter {step}: no checkpoint after a non-finite step. {self.last_good()}")
        elif not weights_finite:
            self.stop(f"the weights are not finite at iteration {step}, so no checkpoint was written. "
                      "Lower --learning-rate or --grad-clip", EXIT_DIVERGED)
        else:
            state = state_of_ranks()  # every rank takes part: it gathers their RNG states
            self.write(save_checkpoint, self.ckpt_path, state)
            self.saved_step = step

    def finish(self, step, checkpoint, max_iters, world, plot_path):
        """After the loop: leave the process group, say how the run ended, plot the losses."""
        self.close()
        if world > 1:
            dist.destroy_process_group()
        if not self.is_main:
            sys.exit(EXIT_INTERRUPTED if self.stopped else 0)
        if self.stopped:
            print(f"interrupted at iteration {step}. {self.last_good()}")
            sys.exit(EXIT_INTERRUPTED)
        if step == 0 or (checkpoint and step == checkpoint["step"]):
            print(f"nothing to do: the run is at iteration {step} of --iters {max_iters}")
        try:
            plot_losses(self.log.path, plot_path)
        except WriteError as e:
            raise RunStopped(f"{e}. Training completed. {self.last_good()}", EXIT_WRITE_FAILED) from None


# ----------------------------------------------------------------------------- command line

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    # Model and training flags default to None: the value then comes from the checkpoint
    # (--resume), else the preset, else the defaults, and an explicit flag wins over all.
    model = p.add_argument_group("model (defaults: the reference config)")
    for f in fields(GPTConfig):
        kind = {"attention": dict(choices=["sdpa", "explicit"]), "kernels": dict(choices=["torch", "ext"]),
                "gelu": dict(choices=["exact", "tanh"])}.get(f.name, dict(type=type(f.default)))
        model.add_argument("--" + f.name.replace("_", "-"), default=None, **kind,
                           help=f"default {f.default}" + (" (4 x embed-dim)" if f.name == "ff_dim" else ""))
    train = p.add_argument_group("training")
    for f in fields(TrainConfig):
        flag = "--iters" if f.name == "max_iters" else "--" + f.name.replace("_", "-")
        kind = dict(choices=["cosine", "constant"]) if f.name == "lr_schedule" else dict(type=type(f.default))
        train.add_argument(flag, dest=f.name, default=None, **kind, help=f"default {f.default}")
    train.add_argument("--preset", choices=sorted(PRESETS), help="a smaller config: cpu trains in minutes on 2 cores")
    train.add_argument("--data", help="a dataset folder from data/prepare.py, a folder of llm.c .bin shards, "
                       "or one token file: a shard or raw uint16 ids (default: the stdlib corpus, prepared on first use)")
    train.add_argument("--skip-data-check", action="store_true",
                       help="do not read a token file without meta.json once at the start to check its ids "
                       "against --vocab-size (a bad id then stops the run when it is drawn)")
    train.add_argument("--out-dir", default="out", help="where checkpoints, metrics and plots go (default out)")
    train.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out-dir")
    train.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                       help="cpu, cuda, cuda:N or mps (default: cuda when a GPU is present)")
    train.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                       help="autocast dtype on CUDA (default bfloat16); the CPU trains in float32")
    train.add_argument("--compile", action="store_true", help="torch.compile the model")
    train.add_argument("--dist-timeout", type=float, default=600,
                       help="seconds a rank waits for the others under torchrun before the job fails (default 600)")
    hub = p.add_argument_group("Hugging Face (needs pip install transformers safetensors; support/hf.py)")
    hub.add_argument("--init-from", metavar="DIR|NAME",
                     help="start from a GPT-2 model: a transformers folder, or a hub name (gpt2, "
                     "gpt2-medium, ...) when online; the model config comes from it")
    hub.add_argument("--export-hf", metavar="DIR",
                     help="write the checkpoint in --out-dir (or --init-from's model) as a transformers "
                     "GPT-2 folder (AutoModelForCausalLM, AutoTokenizer) and exit")
    guards = p.add_argument_group("guards and logging")
    guards.add_argument("--max-nonfinite", type=int, default=3, metavar="N",
                        help="stop (exit status 3) after N steps in a row whose loss or gradient norm is "
                        "not finite; such steps are never applied (default 3)")
    guards.add_argument("--skip-spikes", type=float, metavar="Z",
                        help="do not apply a step whose loss is more than Z standard deviations above the "
                        "last 128 steps' (llm.c's outlier guard; default off)")
    guards.add_argument("--logger", action="append", choices=LOGGERS,
                        help="also log to TensorBoard or W&B (repeat for both); metrics.jsonl is always written")
    guards.add_argument("--peak-flops", type=float, metavar="FLOPS",
                        help="one device's peak FLOP/s for the MFU column (default: looked up for known "
                        "GPUs, see support/runtime.py)")
    sample = p.add_argument_group("sampling")
    sample.add_argument("--sample", action="store_true", help="only sample from the checkpoint in --out-dir")
    sample.add_argument("--prompt", default="", help="text to continue (default: start of a file)")
    sample.add_argument("--num-tokens", type=int, default=300)
    sample.add_argument("--temperature", type=float, default=0.8)
    sample.add_argument("--top-k", type=int, default=50, help="sample from the k likeliest tokens (0: all)")
    sample.add_argument("--top-p", type=float, default=1.0,
                        help="then from the fewest whose probabilities add up to p (default 1: off)")
    return check_run_flags(p.parse_args(argv))


def check_run_flags(args):
    """The flags that are not model or training hyperparameters: checked once, here."""
    if args.init_from and args.resume:
        raise UsageError("--init-from starts a new run from a GPT-2 model, --resume continues the run "
                         f"in {args.out_dir}: use one of them.")
    if args.max_nonfinite < 1:
        raise UsageError(f"--max-nonfinite {args.max_nonfinite}: give 1 or more (1 stops at the first).")
    if args.skip_spikes is not None and not args.skip_spikes > 0:
        raise UsageError(f"--skip-spikes {args.skip_spikes}: give a positive z-score, e.g. 5.")
    if args.peak_flops is not None and not args.peak_flops > 0:
        raise UsageError(f"--peak-flops {args.peak_flops}: give one device's peak FLOP/s, e.g. 312e12.")
    if not (args.num_tokens >= 0 and args.temperature >= 0 and args.top_k >= 0 and 0 < args.top_p <= 1):
        raise UsageError("--num-tokens, --temperature and --top-k must be 0 or more (temperature 0: "
                         "greedy; top-k 0: no limit) and --top-p in (0, 1].")
    return args


def given_flags(args):
    """The model and training flags given on the command line, {field: value}."""
    names = {f.name for f in fields(GPTConfig)} | {f.name for f in fields(TrainConfig)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def resolve_config(given, preset=None, checkpoint=None, pretrained=None):
    """Layer defaults < preset < the checkpoint or --init-from's model < the flags given
    ({field: value}) into (GPTConfig, TrainConfig), and check the result."""
    base = {**asdict(GPTConfig()), **asdict(TrainConfig()), **PRESETS.get(preset, {})}
    if "embed_dim" in given and "ff_dim" not in given:
        base["ff_dim"] = 4 * given["embed_dim"]
    if checkpoint:
        saved = {**checkpoint["config"], **checkpoint["train_args"]}
        shape = ("context_len", "vocab_size", "embed_dim", "n_head", "n_layer", "ff_dim", "gelu")
        clash = [f"{k}={given[k]} (checkpoint: {saved.get(k, base[k])})" for k in shape
                 if k in given and given[k] != saved.get(k, base[k])]
        if clash:
            raise UsageError(f"--resume: the checkpoint in --out-dir has another model shape: "
                             f"{', '.join(clash)}. Drop those flags or use another --out-dir.")
        base.update(saved)
    if pretrained:  # its shape is fixed, but it can be trained on shorter windows
        saved = pretrained["config"]
        clash = [f"{k}={given[k]} (the model: {saved[k]})" for k in saved
                 if k in given and given[k] != saved[k] and k not in ("context_len", "dropout")]
        if given.get("context_len", 0) > saved["context_len"]:
            clash.append(f"context_len={given['context_len']} (the model has {saved['context_len']} positions)")
        if clash:
            raise UsageError(f"--init-from {pretrained['source']}: the model has another shape: {', '.join(clash)}. "
                             "Drop those flags (--context-len may be smaller than the model's).")
        base.update(saved)
    merged = {**base, **given}
    config = GPTConfig(**{f.name: merged[f.name] for f in fields(GPTConfig)})
    train = TrainConfig(**{f.name: merged[f.name] for f in fields(TrainConfig)})
    check_config(config, train)
    return config, train


def check_config(config, train):
    if config.embed_dim % config.n_head:
        raise UsageError(f"embed_dim {config.embed_dim} is not divisible by n_head {config.n_head}: "
                         "each head gets embed_dim / n_head channels.")
    if min(config.context_len, config.vocab_size, config.embed_dim, config.n_head, config.n_layer,
           config.ff_dim, train.batch_size, train.grad_accum, train.max_iters) < 1:
        raise UsageError("sizes, --batch-size, --grad-accum and --iters must be positive.")
    if not 0.0 <= config.dropout < 1.0:
        raise UsageError(f"--dropout {config.dropout} is outside [0, 1).")
    if config.gelu not in ("exact", "tanh"):
        raise UsageError(f"gelu {config.gelu!r}: use exact or tanh.")
    for name in ("eval_interval", "ckpt_interval", "log_interval", "eval_iters"):
        setattr(train, name, max(1, getattr(train, name)))
    if train.grad_clip < 0:
        raise UsageError(f"--grad-clip {train.grad_clip}: give a positive norm, or 0 for no clipping.")


def prepare_out_dir(out_dir):
    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = os.path.join(out_dir, ".write_test")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise UsageError(f"cannot write to --out-dir {out_dir}: {e.strerror}. Choose a writable folder.") from None


# ----------------------------------------------------------------------------- several processes

def init_distributed(device_name, timeout_s):
    """Under torchrun (RANK and WORLD_SIZE set) join the process group; else be rank 0 of 1."""
    try:
        device = torch.device(device_name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {device_name}: use cpu, cuda, cuda:N or mps.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda, but no CUDA GPU is available. Use --device cpu.")
    if device.type == "mps":  # Apple silicon: the pure PyTorch path, in float32, one process
        if not torch.backends.mps.is_available():
            raise UsageError("--device mps, but this machine or this torch build has no MPS "
                             "(Apple silicon GPU) backend. Use --device cpu.")
        if "RANK" in os.environ:
            raise UsageError("--device mps trains in one process: torchrun is not supported there.")
    if "RANK" not in os.environ:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    # A dead or stuck rank must end the job, not hang it: collectives give up after the timeout
    # (and torchrun stops the other ranks as soon as one exits with an error).
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            timeout=datetime.timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size(), device


def wrap_model(model, device, world, compile_model):
    """(the DDP wrapper or None, the model the loop trains, the model rank 0 evaluates)."""
    # DDP averages the gradients over ranks during backward; the buffers (the causal mask)
    # never change, so they need no broadcast.
    ddp_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                    broadcast_buffers=False) if world > 1 else None
    train_model = ddp_model or model
    if compile_model:
        train_model = torch.compile(train_model)
    return ddp_model, train_model, model if world > 1 else train_model  # rank 0 evaluates alone: no DDP hooks


# ----------------------------------------------------------------------------- main: the steps of a run

def load_start(init_from, out_dir, mode):
    """(checkpoint or None, --init-from's model or None): what the run starts from. mode: the
    flag that reads the checkpoint in out_dir (--resume, --sample, --export-hf), or None."""
    pretrained = None
    if init_from:  # a GPT-2 model (transformers folder or hub name), converted by support/hf.py
        from support.hf import load_pretrained
        pretrained = load_pretrained(init_from)
    reads_checkpoint = mode == "--resume" or (mode and not pretrained)  # --sample, --export-hf: of the run
    checkpoint = load_checkpoint(os.path.join(out_dir, "ckpt.pt"), mode) if reads_checkpoint else None
    return checkpoint, pretrained


def open_data(location, config, vocab_given, checkpoint, pretrained, skip_check, is_main, world):
    """(train set, val set, TokenData) for --data, the checkpoint's data, or the default corpus.
    Rank 0 alone prepares the default corpus; the others wait for it."""
    if not is_main:
        dist.barrier()
    data = find_dataset(location, config.vocab_size)
    if is_main and world > 1:
        dist.barrier()
    if data.vocab_size and not (vocab_given or checkpoint or pretrained):
        config.vocab_size = data.vocab_size  # a dataset folder says its own vocab size
    if pretrained:  # the data's token ids must mean what they meant to the model
        check_data_fits(pretrained, data, config)
    check_token_ids(data, config.vocab_size, skip_check)
    data.tokenizer = data.tokenizer or (checkpoint or pretrained or {}).get("tokenizer")
    return (*make_datasets(data, config.context_len, config.vocab_size), data)


def make_model(config, train, device, checkpoint, pretrained, is_main):
    """(model, optimizer, step): new, from the checkpoint (--resume) or from --init-from's weights."""
    torch.manual_seed(train.seed)  # the same initial weights on every rank
    model = GPT(config).to(device)
    optimizer = make_optimizer(model, train, device)
    if checkpoint:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if is_main:
            print(f"resuming from the checkpoint at iteration {checkpoint['step']}")
    elif pretrained:
        model.load_state_dict(pretrained["model"])
        if is_main:
            print(f"starting from {pretrained['source']} ({config.gelu} GELU)")
    return model, optimizer, checkpoint["step"] if checkpoint else 0


def fixed_eval_windows(datasets, train):
    """The window starts every evaluation uses, per split: (eval_iters, batch_size) each."""
    eval_rng = np.random.default_rng(train.seed)
    return {split: eval_rng.integers(0, len(ds), (train.eval_iters, train.batch_size)) for split, ds in datasets.items()}


def spike_guard(z, checkpoint):
    """--skip-spikes Z: the detector, with the checkpoint's recent losses."""
    spikes = SpikeDetector(z) if z else None
    if spikes and checkpoint and checkpoint.get("spike_losses"):
        spikes.load_state_dict(checkpoint["spike_losses"])
    return spikes


def start_log(out_dir, loggers, warn_if_slow, config, train, model, data, world, dtype, device, step):
    """Say what is trained on what (rank 0), and open the metrics log."""
    print(f"model: {model.num_params() / 1e6:.2f}M parameters, {config}")
    print(f"data: {data[0].num_tokens:,} train / {data[1].num_tokens:,} val tokens from {data[2].location}; "
          f"device {device}, {dtype}")
    if world > 1:
        print(f"{world} ranks: effective batch {train.batch_size} x {train.grad_accum} grad accum x "
              f"{world} ranks = {train.batch_size * train.grad_accum * world} sequences per step")
    if warn_if_slow:
        warn_if_slow_on_cpu(model, config, train, device)
    run_config = {**asdict(config), **asdict(train), "world_size": world, "dtype": str(dtype).removeprefix("torch."),
                  "device": str(device), "parameters": model.num_params()}
    try:
        return MetricsLog(out_dir, loggers, run_config, start_step=step)
    except ValueError as e:  # a --logger whose package is not installed
        raise UsageError(str(e)) from None
    except WriteError as e:
        raise RunStopped(str(e), EXIT_WRITE_FAILED) from None


def restore_rng(checkpoint, rank, device, seed):
    """Dropout's random stream: seeded per rank (the same weights on every rank, but different
    dropout masks), then the checkpoint's where it has one (so a resumed run continues exactly)."""
    torch.manual_seed(seed + rank)
    if not checkpoint:
        return
    torch.set_rng_state(checkpoint["rng_cpu"][rank % len(checkpoint["rng_cpu"])])
    if device.type == "cuda" and checkpoint.get("rng_cuda"):
        torch.cuda.set_rng_state(checkpoint["rng_cuda"][rank % len(checkpoint["rng_cuda"])], device)


def state_of_ranks(model, optimizer, step, config, train, world, device, spikes, data):
    """The checkpoint: called by every rank (it gathers their RNG states); rank 0 writes it."""
    rng_cpu, rng_cuda = gather_from_ranks(torch.get_rng_state(), world), None
    if device.type == "cuda":
        rng_cuda = gather_from_ranks(torch.cuda.get_rng_state(device), world)
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
            "config": asdict(config), "train_args": asdict(train), "world_size": world,
            "rng_cpu": rng_cpu, "rng_cuda": rng_cuda, "spike_losses": spikes.state_dict() if spikes else None,
            "data": os.path.abspath(data.location) if data.location != DEFAULT_DATA else None,
            "tokenizer": os.path.abspath(data.tokenizer) if data.tokenizer else None}


class Throughput:
    """Tokens per second between log steps (evaluation and checkpoint time left out: pause()),
    and MFU: the model's FLOPs at that rate over the peak of all the ranks' devices."""

    def __init__(self, step, tokens_per_step, flops_per_token, peak):
        self.tokens_per_step, self.flops_per_token, self.peak = tokens_per_step, flops_per_token, peak
        self.last_time, self.last_step = time.perf_counter(), step

    def pause(self):
        self.last_time = time.perf_counter()

    def __call__(self, step):
        now = time.perf_counter()
        tokens_per_s = (step - self.last_step) * self.tokens_per_step / (now - self.last_time)
        self.last_time, self.last_step = now, step
        return tokens_per_s, (self.flops_per_token * tokens_per_s / self.peak if self.peak else None)


def log_step(run, step, step_loss, lr, norm_now, skipped_steps, throughput, world, device):
    """The one collective of a log step: the mean loss, and whether a rank got Ctrl-C (so that
    every rank stops at the same step). Returns whether to stop."""
    stop_flag = torch.tensor(float(bool(run.stop_requested)), device=device)
    loss_sum, stop_votes = sum_over_ranks(torch.stack([step_loss, stop_flag]), world).tolist()
    tokens_per_s, mfu = throughput(step)
    record = {"iter": step, "train_loss": loss_sum / world, "lr": lr, "tokens_per_s": tokens_per_s,
              "grad_norm": norm_now, "skipped_steps": skipped_steps}
    postfix = dict(loss=f"{loss_sum / world:.4f}", lr=f"{lr:.2e}", gnorm=f"{norm_now:.3g}", tok_s=f"{tokens_per_s:,.0f}")
    if mfu is not None:
        record["mfu"], postfix["mfu"] = mfu, f"{100 * mfu:.1f}%"
    run.record(record)
    run.bar.set_postfix(postfix)
    return stop_votes > 0


def main(argv=None):
    args = parse_args(argv)
    rank, world, device = init_distributed(args.device, args.dist_timeout)
    is_main = rank == 0  # only rank 0 prints, evaluates, writes metrics and checkpoints
    mode = "--resume" if args.resume else "--sample" if args.sample else "--export-hf" if args.export_hf else None
    checkpoint, pretrained = load_start(args.init_from, args.out_dir, mode)
    config, train = resolve_config(given_flags(args), args.preset, checkpoint, pretrained)
    sampling = SampleConfig(args.prompt, args.num_tokens, args.temperature, args.top_k, args.top_p, train.seed)
    if pretrained:  # trained on shorter windows: keep the first context_len positions
        pretrained["model"]["pos_emb.weight"] = pretrained["model"]["pos_emb.weight"][:config.context_len]
    if args.export_hf:  # convert and exit
        if is_main:
            export_hf(pretrained or checkpoint, config, args.export_hf)
        return
    dtype, autocast, scaler = precision(device, args.dtype)
    check_kernels(config, device, dtype)
    if args.sample:  # sampling only: no data needed, the checkpoint knows its tokenizer
        model = GPT(config).to(device)
        model.load_state_dict((pretrained or checkpoint)["model"])
        return print_sample(model, (pretrained or checkpoint).get("tokenizer"), sampling, device)

    if is_main:
        prepare_out_dir(args.out_dir)
    train_set, val_set, data = open_data(args.data or (checkpoint or {}).get("data"), config, args.vocab_size is not None,
                                         checkpoint, pretrained, args.skip_data_check, is_main, world)
    model, optimizer, step = make_model(config, train, device, checkpoint, pretrained, is_main)
    ddp_model, train_model, eval_model = wrap_model(model, device, world, args.compile)
    loss_fn = loss_function(config.kernels, dtype, overwrite_logits=True)
    batches = make_batches(train_set, train, step, checkpoint, rank, world)
    eval_sets = {"train": train_set, "val": val_set}
    eval_starts = fixed_eval_windows(eval_sets, train)
    throughput = Throughput(step, train.batch_size * train.grad_accum * world * config.context_len,
                            flops_per_token(model, config), (peak_flops(device, dtype, args.peak_flops) or 0) * world)
    spikes = spike_guard(args.skip_spikes, checkpoint)
    log = start_log(args.out_dir, args.logger, not args.preset, config, train, model, (train_set, val_set, data), world,
                    dtype, device, step) if is_main else None
    run = Run(os.path.join(args.out_dir, "ckpt.pt"), is_main, world, checkpoint, train.max_iters, log)
    restore_rng(checkpoint, rank, device, train.seed)  # last thing before the loop: dropout's stream
    model.train()
    while step < train.max_iters and not run.stopped:
        lr = learning_rate_at(step, train)                               # 1. the learning rate
        for group in optimizer.param_groups:
            group["lr"] = lr
        step_loss = 0.0  # mean over the micro-batches of this step
        for micro_step in range(train.grad_accum):
            x, y = next(batches)                                         # 2. a batch: (B, T), (B, T)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            # With accumulation, all-reduce the gradients once, on the last micro-batch.
            sync = ddp_model is None or micro_step == train.grad_accum - 1
            with contextlib.nullcontext() if sync else ddp_model.no_sync():
                with autocast:
                    logits = train_model(x)                              # 3. forward: (B, T, V)
                    loss = loss_fn(logits.view(-1, logits.size(-1)), y.view(-1))  # 4. the loss
                scaler.scale(loss / train.grad_accum).backward()         # 5. backward, accumulated
            step_loss += loss.detach().float() / train.grad_accum
        scaler.unscale_(optimizer)                                       # 6. clip, guard, update
        # the norm before clipping (--grad-clip 0: none); the same on every rank, as DDP averaged the gradients
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip or math.inf)
        loss_now, norm_now, skip = guard(step_loss, grad_norm, spikes, scaler, world)
        if skip is None:
            scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        step += 1                                                        # 7. log, evaluate, checkpoint
        run.after_step(step, skip, loss_now, norm_now, args.max_nonfinite)
        if step % train.log_interval == 0 or step == train.max_iters:
            run.stopped = log_step(run, step, step_loss, lr, norm_now, run.skipped_steps, throughput, world, device)
        if is_main and (step % train.eval_interval == 0 or step == train.max_iters):
            losses = evaluate(eval_model, eval_sets, eval_starts, loss_fn, device, autocast)
            run.record({"iter": step, "eval_train_loss": losses["train"], "val_loss": losses["val"]})
            run.say(f"iter {step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
            throughput.pause()  # evaluation time is not training throughput
        if step % train.ckpt_interval == 0 or step == train.max_iters or run.stopped:
            run.checkpoint(step, lambda: state_of_ranks(model, optimizer, step, config, train, world, device, spikes,
                                                        data), all_finite(model, optimizer))
            throughput.pause()
    run.finish(step, checkpoint, train.max_iters, world, os.path.join(args.out_dir, "loss_curve.png"))
    print(f"\nsample (temperature {sampling.temperature}, top-k {sampling.top_k}, top-p {sampling.top_p}):\n")
    print_sample(model, data.tokenizer, sampling, device)


if __name__ == "__main__":
    try:
        main()
    except (UsageError, HFError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except RunStopped as e:
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank stops; rank 0 says why
            print(f"error: {e}", file=sys.stderr)
        sys.exit(e.status)
