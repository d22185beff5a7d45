"""Token shards on disk: the one file format data/prepare.py writes and gpt_pretrain.py reads.

A shard is llm.c's `.bin` format (karpathy/llm.c, dev/data/data_common.py), so folders made
by llm.c's scripts (fineweb_train_000001.bin, ...) train here too:

    header  256 little-endian int32: [0] magic, [1] version, [2] number of tokens, rest 0
    body    the token ids, little-endian, uint16 (magic 20240520, version 1)
            or uint32 (magic 20240801, version 7: vocabularies above 65,536 ids)

A dataset folder from data/prepare.py holds {split}_{index:06d}.bin shards, tokenizer.json
and meta.json (written last: a folder without it is incomplete). meta.json's "splits" lists
each split's shards with their token counts and the largest id in it, so a run starts without
reading the tokens. Older folders (raw uint16 train.bin / val.bin, no "splits") still load.

meta.json (the keys the training script reads; prepare.py adds where the text came from):
    {"vocab_size": 50257, "dtype": "uint16", "tokenizer": "tokenizer.json",
     "eot_token": "<|endoftext|>", "eot_id": 50256, "train_tokens": N, "val_tokens": M,
     "splits": {"train": {"tokens": N, "max_id": I, "shards": [
                    {"file": "train_000000.bin", "tokens": n, "max_id": i}, ...]},
                "val": {...}}}
"""
import os

import numpy as np

HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
MAGIC = {np.dtype(np.uint16): (20240520, 1), np.dtype(np.uint32): (20240801, 7)}
MAX_SHARD_TOKENS = 2**31 - 1
DTYPE_OF_MAGIC = {magic: dtype for dtype, (magic, _) in MAGIC.items()}


class ShardError(ValueError):
    """A token file that cannot be read as stated; the message names the file and the fix."""


def token_dtype(vocab_size):
    """The narrowest id type that holds every id below vocab_size."""
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


def shard_header(num_tokens, dtype):
    """The 1024-byte header of a shard of num_tokens ids of dtype (uint16 or uint32)."""
    if not 0 <= num_tokens <= MAX_SHARD_TOKENS:  # 0: the placeholder of a shard being written
        raise ShardError(f"a shard holds at most {MAX_SHARD_TOKENS:,} tokens (its header counts them in an "
                         f"int32), not {num_tokens:,}: write more shards.")
    magic, version = MAGIC[np.dtype(dtype)]
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = magic, version, num_tokens
    return header.tobytes()


def is_shard(path):
    """Whether path starts with a shard header (magic and version both llm.c's)."""
    with open(path, "rb") as f:
        start = f.read(8)
    head = np.frombuffer(start, dtype="<i4") if len(start) == 8 else []
    return len(head) == 2 and int(head[0]) in DTYPE_OF_MAGIC and \
        MAGIC[DTYPE_OF_MAGIC[int(head[0])]][1] == int(head[1])


def read_shard(path):
    """The token ids of a shard as a read-only np.memmap (never read whole), after checking that
    the header is one and the body holds exactly the tokens it announces."""
    size = os.path.getsize(path)
    if size < HEADER_BYTES:
        raise ShardError(f"{path} is {size} bytes, shorter than a shard's {HEADER_BYTES}-byte header: "
                         "it is not a token shard (raw uint16 ids belong in a file given directly to --data).")
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(HEADER_BYTES), dtype="<i4")
    magic, version, count = (int(v) for v in header[:3])
    if magic not in DTYPE_OF_MAGIC:
        raise ShardError(f"{path} has magic number {magic}, not a shard's ({' or '.join(map(str, DTYPE_OF_MAGIC))}: "
                         "llm.c's uint16 or uint32 format). Re-make it with data/prepare.py.")
    dtype = DTYPE_OF_MAGIC[magic]
    if version != MAGIC[dtype][1]:
        raise ShardError(f"{path} has format version {version}; only version {MAGIC[dtype][1]} of the "
                         f"{dtype.name} shard format is known.")
    if count <= 0:
        raise ShardError(f"{path} announces {count} tokens: an empty shard (or not a shard); re-make it.")
    expected = HEADER_BYTES + count * dtype.itemsize
    if size != expected:
        what = "truncated" if size < expected else "longer than its header says"
        raise ShardError(f"{path} is {what}: its header announces {count:,} {dtype.name} tokens "
                         f"({expected:,} bytes with the header) but the file has {size:,} bytes. "
                         "Re-make it (an interrupted copy or preparation leaves such files).")
    return np.memmap(path, dtype=dtype.newbyteorder("<"), mode="r", offset=HEADER_BYTES, shape=(count,))


def largest_id(path, dtype, offset=0, count=None, chunk=1 << 24, progress=None):
    """The largest of count ids of dtype stored in path from byte offset on (None: to the end),
    read in chunks with plain reads (np.fromfile): memory-mapping the file instead would
    keep every page it touched resident. progress(n) is called with the ids done per chunk."""
    dtype = np.dtype(dtype).newbyteorder("<")
    if count is None:
        count = (os.path.getsize(path) - offset) // dtype.itemsize
    largest, done = 0, 0
    with open(path, "rb") as f:
        f.seek(offset)
        while done < count:
            ids = np.fromfile(f, dtype=dtype, count=min(chunk, count - done))  # whole ids, or fewer at the end
            got = len(ids)
            if got == 0:
                raise ShardError(f"{path} ended after {done:,} of its {count:,} tokens.")
            largest = max(largest, int(ids.max()))
            done += got
            if progress:
                progress(got)
    return largest


def shard_name(split, index):
    """The file name of a split's index-th shard: train_000000.bin, val_000003.bin, ..."""
    return f"{split}_{index:06d}.bin"


class ShardWriter:
    """Streams one split's token ids into shards of at most shard_tokens ids each.

    Each shard is written to NAME.tmp (a header with a count of 0 first), and on completion its
    header's count is filled in, the file fsynced and renamed to NAME, so a shard that exists
    under its own name is always complete. write(ids) takes any integer array; close() finishes
    the last shard and returns the split's entry for meta.json's "splits"; abort() removes the
    unfinished shard. Documents run on across shard boundaries, as in llm.c's shards."""

    def __init__(self, out_dir, split, dtype, shard_tokens):
        if shard_tokens < 1:
            raise ValueError(f"shard_tokens must be at least 1, not {shard_tokens}")
        self.out_dir, self.split, self.dtype = str(out_dir), split, np.dtype(dtype).newbyteorder("<")
        self.shard_tokens = int(shard_tokens)
        self.shards, self.file, self.count, self.max_id = [], None, 0, 0

    def _tmp_path(self):
        return os.path.join(self.out_dir, shard_name(self.split, len(self.shards)) + ".tmp")

    def write(self, ids):
        ids = np.asarray(ids)
        while len(ids):
            if self.file is None:
                self.file = open(self._tmp_path(), "wb")
                self.file.write(shard_header(0, self.dtype))
                self.count, self.max_id = 0, 0
            part, ids = ids[:self.shard_tokens - self.count], ids[self.shard_tokens - self.count:]
            self.max_id = max(self.max_id, int(part.max()))
            if self.max_id > np.iinfo(self.dtype).max:
                raise ValueError(f"token id {self.max_id} does not fit the shards' {self.dtype.name}")
            self.file.write(part.astype(self.dtype, copy=False).tobytes())
            self.count += len(part)
            if self.count == self.shard_tokens:
                self._finish()

    def _finish(self):
        f, self.file = self.file, None
        try:
            f.seek(0)
            f.write(shard_header(self.count, self.dtype))
            f.flush()
            os.fsync(f.fileno())
        finally:
            f.close()
        name = shard_name(self.split, len(self.shards))
        os.replace(f.name, os.path.join(self.out_dir, name))
        self.shards.append({"file": name, "tokens": self.count, "max_id": self.max_id})

    def close(self):
        """Finish the last shard; returns {"tokens", "max_id", "shards": [...]} for meta.json."""
        if self.file is not None and self.count:
            self._finish()
        self.abort()
        return {"tokens": sum(s["tokens"] for s in self.shards),
                "max_id": max((s["max_id"] for s in self.shards), default=0),
                "shards": list(self.shards)}

    def abort(self):
        """Close and remove the unfinished shard (finished ones stay)."""
        if self.file is not None:
            name = self.file.name
            self.file.close()
            self.file = None
            try:
                os.remove(name)
            except FileNotFoundError:
                pass
