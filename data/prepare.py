"""Prepare a token dataset for gpt_pretrain.py: text in, token shards out, streamed.

    python data/prepare.py                       # the default corpus: this Python's stdlib source
    python data/prepare.py --source my_text/     # a folder of text files (or one text file)
    python data/prepare.py --source book.txt --out data/book --vocab-size 2000
    python data/prepare.py --source corpus.jsonl.gz --out data/corpus --tokenizer tokenizer.json
    python data/prepare.py --source shards/ --text-field content     # a folder of .jsonl/.parquet
    python data/prepare.py --hf-dataset roneneldan/TinyStories --out data/tinystories --vocab-size 8192
    python data/prepare.py --hf-dataset HuggingFaceFW/fineweb --hf-config sample-10BT \\
        --tokenizer gpt2 --val-fraction 0.01 --out data/fineweb10B   # GPT-2's tokenizer, eot 50256

Sources (--source, or --hf-dataset):
    a text file          one document, split into train / val by position at a line boundary
    a folder of text     one document per file (binary and hidden files skipped), split by a
                         hash of the file's relative path, so adding a file moves no other
    .jsonl, .jsonl.gz    one JSON object per line, the document in the field --text-field
    .parquet             the string column --text-field, read in record batches (needs pyarrow)
    a folder of those    every .jsonl / .jsonl.gz / .parquet file under it, in sorted order
    --hf-dataset NAME    a Hugging Face dataset streamed with the `datasets` library (optional:
                         pip install datasets), --hf-config C, --hf-split S (default train),
                         --hf-data-files F... for builders that take files (json, parquet, text)
Documents of jsonl/parquet/HF sources go to val by a hash of their index (about
--val-fraction of them, default 0.1); tiny inputs keep at least one document on each side.
Offline, an HF dataset must already be in the Hugging Face cache: set HF_HUB_OFFLINE=1, or
download the files once and give them to --source.

Tokenizer: by default a byte-level BPE (--vocab-size ids, default 1000, with <|endoftext|>) is
trained on the first --tokenizer-sample-bytes (default 100M) of train text, spread over the
corpus when its size is known. --tokenizer FILE uses an existing Hugging Face tokenizer.json
(a folder holding one works too), --tokenizer NAME (e.g. gpt2) one from the Hugging Face hub or
its local cache; its <|endoftext|> ends each document (else a known end token such as </s>,
or --eot-token TOKEN). Offline without the cached file: download tokenizer.json once
(https://huggingface.co/gpt2/resolve/main/tokenizer.json) and pass --tokenizer FILE.

Output folder (--out; format in data/shards.py):
    train_000000.bin ...  token shards of --shard-tokens ids each (default 100M; llm.c's .bin
    val_000000.bin ...    format: a 1024-byte header, then uint16 ids, uint32 above 65,536 ids)
    tokenizer.json        the tokenizer (Hugging Face `tokenizers` format)
    meta.json             vocab size, dtype, eot id, token counts, shards (written last: a folder
                          without it is incomplete)
Each document is followed by the end-of-text id. Documents flow in batches through the
tokenizer's encode_batch (all cores) into the shards, so memory stays bounded whatever the
corpus size; every shard is written to a .tmp file and renamed when complete. A new run first
removes meta.json and the shards of an earlier one in --out (interrupted runs included).

The default corpus is the Python standard library's own source (every *.py under sysconfig's
stdlib path, site-packages excluded): every Python install has it, so training works offline
on a fresh machine.
"""
import argparse
import codecs
import gzip
import hashlib
import io
import json
import os
import queue
import re
import shutil
import sys
import sysconfig
import threading
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

if __package__ in (None, ""):  # run as a script: python data/prepare.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from data.shards import MAX_SHARD_TOKENS, ShardWriter, token_dtype  # noqa: E402

EOT = "<|endoftext|>"
# end-of-document tokens of other tokenizers, tried in order when there is no <|endoftext|>
EOT_ALTERNATIVES = ("<|end_of_text|>", "</s>", "<eos>", "<|eos|>", "<|im_end|>")
DEFAULT_DIR = Path(__file__).resolve().parent / "stdlib"
DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
PIECE_CHARS = 1 << 18    # longer documents are encoded in pieces of at most this many characters
BLOCK_BYTES = 1 << 20    # text files are read in blocks of this size
BATCH_DOCS = 1024        # a batch for encode_batch: at most this many pieces ...
BATCH_CHARS = 4 << 20    # ... or this many characters (its encodings take ~20x that in memory)

STALE = re.compile(r"^(train|val)(_\d{6})?\.bin(\.tmp)?$")


class PrepareError(Exception):
    """Bad input to prepare(): the message says what is wrong and how to fix it."""


# ---------------------------------------------------------------- documents

def cut_point(text, start, limit):
    """An index in text[start + limit // 2 : start + limit] where the text can be cut without
    changing how a byte-level (GPT-2 regex) pre-tokenizer splits it: after a newline between two
    non-space characters, else before a space between two, else at start + limit.
    len(text) > start + limit."""
    lo, hi = start + limit // 2, start + limit
    p = hi
    while (p := text.rfind("\n", lo, p)) > lo:
        if not text[p - 1].isspace() and not text[p + 1].isspace():
            return p + 1
    p = hi
    while (p := text.rfind(" ", lo, p)) > lo:
        if not text[p - 1].isspace() and not text[p + 1].isspace():
            return p
    return hi


def pieces(blocks, limit=PIECE_CHARS):
    """The text of blocks (an iterable of (str, progress)) re-cut into pieces of at most limit
    characters at pre-token boundaries (cut_point), as (piece, progress) pairs. A block's end is
    no such boundary, so what follows a block's last cut waits for the next block."""
    carry, pending = "", 0
    for block, progress in blocks:
        text = carry + block if carry else block
        pending += progress
        start = 0
        while len(text) - start > limit:
            cut = cut_point(text, start, limit)
            yield text[start:cut], pending
            start, pending = cut, 0
        carry = text[start:]
    if carry or pending:
        yield carry, pending


class TextDoc:
    """A document held as a string; progress: what it counts for in the progress bar."""

    def __init__(self, text, progress=0):
        self.text, self.progress = text, progress

    def empty(self):
        return not self.text

    def pieces(self):
        return pieces([(self.text, self.progress)])

    def halves(self, fraction):
        """(train, val) parts cut by position at a line boundary."""
        text = self.text
        cut = int(len(text) * fraction)
        cut = text.rfind("\n", 0, cut) + 1 or cut  # at a line boundary where there is one
        share = cut / max(1, len(text))
        return TextDoc(text[:cut], self.progress * share), TextDoc(text[cut:], self.progress * (1 - share))


class FileDoc:
    """A document that is the bytes [start, end) of a text file, read in blocks when encoded
    (errors="replace": a stray non-UTF-8 byte should not stop the preparation of a corpus;
    newlines translated as by Path.read_text)."""

    def __init__(self, path, start=0, end=None):
        self.path, self.start = path, start
        self.end = os.path.getsize(path) if end is None else end
        self.progress = self.end - self.start

    def empty(self):
        return self.end <= self.start

    def blocks(self):
        # universal newlines (\r\n and \r read as \n), as Path.read_text does
        decoder = io.IncrementalNewlineDecoder(codecs.getincrementaldecoder("utf-8")(errors="replace"), True)
        with open(self.path, "rb") as f:
            f.seek(self.start)
            left = self.end - self.start
            while left > 0:
                data = f.read(min(BLOCK_BYTES, left))
                if not data:
                    break
                left -= len(data)
                yield decoder.decode(data, final=left <= 0), len(data)
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail, 0

    def pieces(self):
        return pieces(self.blocks())

    def halves(self, fraction):
        """(train, val) parts cut by position at a line boundary (the last newline before the
        cut position, else the cut position itself, moved back to a character boundary)."""
        target = self.start + int((self.end - self.start) * fraction)
        cut = None
        with open(self.path, "rb") as f:
            hi = target
            while hi > self.start and cut is None:
                lo = max(self.start, hi - BLOCK_BYTES)
                f.seek(lo)
                newline = f.read(hi - lo).rfind(b"\n")
                if newline >= 0:
                    cut = lo + newline + 1
                hi = lo
            if cut is None:  # no newline: the cut position, at the start of a UTF-8 character
                cut = target
                while cut > self.start:
                    f.seek(cut)
                    byte = f.read(1)
                    if not byte or (byte[0] & 0xC0) != 0x80:
                        break
                    cut -= 1
        return FileDoc(self.path, self.start, cut), FileDoc(self.path, cut, self.end)


# ---------------------------------------------------------------- sources

def hashed_val(key, val_fraction):
    """Whether the document with this key (a str) goes to val: a hash, uniform in [0, 1)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < val_fraction


def path_val(relpath, val_fraction):
    """The split of a file in a folder of text files: a hash of its relative path."""
    return zlib.crc32(relpath.encode()) % 1000 < val_fraction * 1000


class Source:
    """Where documents come from. docs() yields (key, doc); is_val(key, fraction) says a
    document's side. total / unit: the progress bar's (bytes of the files, or documents)."""
    presplit = False  # docs() yields (is_val, doc) itself
    total, unit = None, "B"

    def is_val(self, key, val_fraction):
        return hashed_val(key, val_fraction)


class TextFileSource(Source):
    presplit = True

    def __init__(self, path, val_fraction):
        self.path, self.val_fraction = path, val_fraction
        self.total = os.path.getsize(path)
        self.description = str(path.resolve())
        if self.total == 0:
            raise PrepareError(f"the text in {path} is empty")
        with open(path, "rb") as f:
            if b"\0" in f.read(8192):
                raise PrepareError(f"{path} is not a text file (it holds NUL bytes): give a text file, a "
                                   f".jsonl / .jsonl.gz / .parquet file ({', '.join(DATA_SUFFIXES)}), or a folder")

    def docs(self):
        train, val = FileDoc(self.path).halves(1 - self.val_fraction)
        yield False, train
        yield True, val


class TextFolderSource(Source):
    def __init__(self, root, files, description):
        self.root, self.files, self.description = root, files, description
        self.total = sum(os.path.getsize(p) for p in files)

    def docs(self):
        for p in self.files:
            yield p.relative_to(self.root).as_posix(), FileDoc(p)

    def is_val(self, key, val_fraction):
        return path_val(key, val_fraction)


def jsonl_docs(path, key_prefix, field):
    raw = open(path, "rb")
    f = gzip.GzipFile(fileobj=raw, mode="rb") if path.name.endswith(".gz") else raw
    last = 0
    lineno = 0
    try:
        with raw, f:
            for lineno, line in enumerate(f, 1):
                position = raw.tell()
                progress, last = position - last, position
                if not line or line.isspace():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as e:
                    raise PrepareError(f"{path}, line {lineno} is not valid JSON ({e}): each line of a "
                                       f".jsonl file must be one JSON object, such as {{\"{field}\": \"...\"}}") from None
                if not isinstance(record, dict):
                    raise PrepareError(f"{path}, line {lineno} is a JSON {type(record).__name__}, not an "
                                       f"object with a {field!r} field")
                if field not in record:
                    raise PrepareError(f"{path}, line {lineno} has no field {field!r}; its fields are "
                                       f"{', '.join(map(repr, record)) or 'none'}: choose one with --text-field")
                text = record[field]
                if not isinstance(text, str):
                    raise PrepareError(f"{path}, line {lineno}: field {field!r} is a JSON "
                                       f"{'null' if text is None else type(text).__name__}, not a string")
                yield f"{key_prefix}{lineno}", TextDoc(text, progress)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise PrepareError(f"cannot read {path} after line {lineno}: {e} (a corrupt or truncated file?)") from None


def parquet_docs(path, key_prefix, field, batch_rows=1024):
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise PrepareError(f"reading {path} needs pyarrow: pip install pyarrow "
                           "(or convert the file to .jsonl)") from None
    try:
        parquet = pq.ParquetFile(path)
    except Exception as e:
        raise PrepareError(f"{path} is not a readable parquet file: {e}") from None
    schema = parquet.schema_arrow
    if field not in schema.names:
        raise PrepareError(f"{path} has no column {field!r}; its columns are "
                           f"{', '.join(map(repr, schema.names))}: choose one with --text-field")
    kind = schema.field(field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or getattr(pa.types, "is_string_view", lambda _: False)(kind)):
        raise PrepareError(f"{path}: column {field!r} holds {kind}, not strings")
    size, rows = os.path.getsize(path), max(1, parquet.metadata.num_rows)
    row = 0
    try:
        with parquet:
            for batch in parquet.iter_batches(batch_size=batch_rows, columns=[field]):
                for text in batch.column(0).to_pylist():
                    row += 1
                    if text is None:
                        raise PrepareError(f"{path}, row {row}: column {field!r} is null, not a string")
                    # progress: the file's bytes spread over its rows, as integers summing to its size
                    yield f"{key_prefix}{row}", TextDoc(text, size * row // rows - size * (row - 1) // rows)
    except PrepareError:
        raise
    except Exception as e:
        raise PrepareError(f"cannot read {path} after row {row}: {e}") from None


class DataFilesSource(Source):
    """.jsonl / .jsonl.gz / .parquet files; documents keyed by file and line / row number."""

    def __init__(self, root, files, field, description):
        self.root, self.files, self.field, self.description = root, files, field, description
        self.total = sum(os.path.getsize(p) for p in files)

    def docs(self):
        for p in self.files:
            # a lone file's documents are keyed by line alone: renaming it keeps the split
            prefix = "" if len(self.files) == 1 else p.relative_to(self.root).as_posix() + ":"
            if p.name.endswith(".parquet"):
                yield from parquet_docs(p, prefix, self.field)
            else:
                yield from jsonl_docs(p, prefix, self.field)


def hf_unreachable(name, error):
    home = os.environ.get("HF_HOME", os.path.join("~", ".cache", "huggingface"))
    return (f"cannot load the Hugging Face dataset {name!r} ({type(error).__name__}: {error}). "
            f"Offline, the dataset must already be in the Hugging Face cache ({home}) and "
            "HF_HUB_OFFLINE=1 set, so that `datasets` does not try the network; otherwise download its "
            "files once where there is network access and prepare them as a local file or folder "
            "(--source FILE.jsonl / FILE.parquet / FOLDER).")


class HFSource(Source):
    unit = "doc"

    def __init__(self, name, config, split, data_files, field):
        try:
            import datasets
        except ImportError:
            raise PrepareError("--hf-dataset needs the `datasets` library: pip install datasets "
                               "(or pip install -e '.[data]'); or download the data and prepare it "
                               "as a local file: --source FILE.jsonl / FILE.parquet") from None
        self.name, self.field = name, field
        kwargs = {"split": split, "streaming": True}
        if data_files:
            kwargs["data_files"] = list(data_files)
        try:
            self.dataset = datasets.load_dataset(name, config, **kwargs)
        except Exception as e:
            raise PrepareError(hf_unreachable(name, e)) from None
        try:
            self.total = self.dataset.info.splits[split].num_examples or None
        except (AttributeError, KeyError, TypeError):
            self.total = None
        self.description = (f"Hugging Face dataset {name}" + (f", config {config}" if config else "")
                            + f", split {split}" + (f", files {', '.join(map(str, data_files))}" if data_files else ""))

    def docs(self):
        index = -1
        iterator = iter(self.dataset)
        while True:
            try:
                record = next(iterator)
            except StopIteration:
                return
            except Exception as e:
                raise PrepareError(hf_unreachable(self.name, e)) from None
            index += 1
            if self.field not in record:
                raise PrepareError(f"the Hugging Face dataset {self.name!r}, row {index}, has no column "
                                   f"{self.field!r}; its columns are {', '.join(map(repr, record))}: "
                                   "choose one with --text-field")
            text = record[self.field]
            if not isinstance(text, str):
                raise PrepareError(f"the Hugging Face dataset {self.name!r}, row {index}: column {self.field!r} "
                                   f"is {'null' if text is None else type(text).__name__}, not a string")
            yield str(index), TextDoc(text, 1)


def stdlib_files():
    """(root, sorted list of *.py paths) of this Python's standard library, no site-packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in root.rglob("*.py")
             if not ({"site-packages", "dist-packages"} & set(p.relative_to(root).parts))]
    return root, sorted(files, key=lambda p: p.relative_to(root).as_posix())


def is_data_file(path):
    return path.name.endswith(DATA_SUFFIXES)


def folder_files(root):
    """The sorted non-hidden files under a folder."""
    return [p for p in sorted(root.rglob("*"), key=lambda p: p.relative_to(root).as_posix())
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)]


def text_files(source):
    """(root, sorted list of non-empty text files) under a folder; binary files (a NUL byte in
    their first 8 KB) are skipped."""
    root = Path(source)
    files = []
    for p in folder_files(root):
        with open(p, "rb") as f:
            head = f.read(8192)
        if head and b"\0" not in head:
            files.append(p)
    return root, files


def open_source(source, val_fraction, text_field, hf_dataset, hf_config, hf_split, hf_data_files):
    if hf_dataset:
        if source is not None:
            raise PrepareError("give either --source or --hf-dataset, not both")
        return HFSource(hf_dataset, hf_config, hf_split, hf_data_files, text_field)
    if hf_data_files:
        raise PrepareError("--hf-data-files goes with --hf-dataset (e.g. --hf-dataset json)")
    if source is None:
        root, files = stdlib_files()
        return TextFolderSource(root, [p for p in files if os.path.getsize(p)],
                                f"Python {sys.version.split()[0]} standard library source ({root})")
    source = Path(source)
    if source.is_file():
        if is_data_file(source):
            return DataFilesSource(source.parent, [source], text_field, str(source.resolve()))
        return TextFileSource(source, val_fraction)
    if not source.is_dir():
        raise PrepareError(f"source {source} does not exist: give a text file, a .jsonl / .jsonl.gz / "
                           ".parquet file, or a folder of them")
    data = [p for p in folder_files(source) if is_data_file(p)]
    if data:
        others = len(folder_files(source)) - len(data)
        if others:
            print(f"{source} holds {len(data)} .jsonl/.parquet files: reading those, ignoring its "
                  f"{others} other files")
        return DataFilesSource(source, data, text_field, str(source.resolve()))
    root, files = text_files(source)
    if not files:
        raise PrepareError(f"no text files found in {source}")
    return TextFolderSource(root, files, str(source.resolve()))


def assigned(source, val_fraction):
    """(is_val, doc) for the source's non-empty documents, in order. Each goes to the side its
    key hashes to, except that both sides get at least one: while all documents so far went to
    one side, the latest is held back; if no document of the other side comes, it goes there
    (a lone document is cut in two by position instead)."""
    if source.presplit:
        yield from source.docs()
        return
    held, sides, count = None, set(), 0
    for key, doc in source.docs():
        if doc.empty():
            continue
        count += 1
        side = source.is_val(key, val_fraction)
        if len(sides) == 2:
            yield side, doc
            continue
        sides.add(side)
        if held is not None:
            yield held
            held = None
        if len(sides) == 2:
            yield side, doc
        else:
            held = side, doc
    if held is not None:
        side, doc = held
        if count == 1:
            train, val = doc.halves(1 - val_fraction)
            yield False, train
            yield True, val
        else:
            yield not side, doc


# ---------------------------------------------------------------- tokenizer

def sample_texts(source, val_fraction, budget):
    """Train text for the tokenizer, about budget bytes (UTF-8) of it: every train document where
    the corpus fits, else a deterministic sample spread over it where its size is known (each
    document kept with probability budget / train size), else the first documents."""
    train_size = source.total * (1 - val_fraction) if source.total and source.unit == "B" else None
    keep = 1.0 if not train_size or train_size <= budget else budget / train_size
    taken = 0
    for index, (is_val, doc) in enumerate(assigned(source, val_fraction)):
        if is_val or (keep < 1 and not hashed_val(f"sample:{index}", keep)):
            continue
        for piece, _ in doc.pieces():
            yield piece
            taken += len(piece) if piece.isascii() else len(piece.encode("utf-8"))
            if taken >= budget:
                return


def train_tokenizer(texts, vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=True)
    print(f"training a byte-level BPE tokenizer, vocab size {vocab_size}")
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def hub_tokenizer(name):
    """The tokenizer NAME from the Hugging Face hub: its tokenizer.json from the local cache, else
    downloaded (unless HF_HUB_OFFLINE), else built from cached vocab.json + merges.txt."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        hf_hub_download = None
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    problem = "huggingface_hub is not installed" if hf_hub_download is None else None
    if hf_hub_download is not None:
        for local_only in (True,) if offline else (True, False):
            try:
                return Tokenizer.from_file(hf_hub_download(name, "tokenizer.json", local_files_only=local_only))
            except Exception as e:
                problem = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        try:  # older snapshots (and transformers' GPT-2 cache) hold the BPE files only
            vocab = hf_hub_download(name, "vocab.json", local_files_only=True)
            merges = hf_hub_download(name, "merges.txt", local_files_only=True)
            tokenizer = Tokenizer(models.BPE.from_file(vocab, merges))
            tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tokenizer.decoder = decoders.ByteLevel()
            tokenizer.add_special_tokens([EOT])
            return tokenizer
        except Exception:
            pass
    home = os.environ.get("HF_HOME", os.path.join("~", ".cache", "huggingface"))
    raise PrepareError(
        f"--tokenizer {name}: not a file, and the Hugging Face tokenizer {name!r} is not in the local cache "
        f"({home}/hub){'' if offline else ' and could not be downloaded'} ({problem}). Download its "
        f"tokenizer.json once where there is network access (https://huggingface.co/{name}/resolve/main/"
        f"tokenizer.json, or `huggingface-cli download {name} tokenizer.json`) and pass --tokenizer PATH/tokenizer.json")


def load_tokenizer(spec):
    """(tokenizer, path of its file or None) for --tokenizer: a tokenizer.json, a folder holding
    one, or a Hugging Face hub name."""
    from tokenizers import Tokenizer
    path = Path(spec)
    if path.is_dir():
        path = path / "tokenizer.json"
    if path.is_file():
        try:
            return Tokenizer.from_file(str(path)), path
        except Exception as e:
            raise PrepareError(f"cannot read the tokenizer {path}: {e} (a Hugging Face tokenizer.json is needed)") from None
    if path.exists() or str(spec).endswith(".json") or os.sep in str(spec):
        raise PrepareError(f"tokenizer file {path} does not exist")
    return hub_tokenizer(str(spec)), None


def end_token(tokenizer, requested=None):
    """(token, id) that ends each document: requested, else <|endoftext|>, else a known end token."""
    if requested:
        token_id = tokenizer.token_to_id(requested)
        if token_id is None:
            raise PrepareError(f"--eot-token {requested!r} is not in the tokenizer's vocabulary")
        return requested, token_id
    for token in (EOT,) + EOT_ALTERNATIVES:
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            if token != EOT:
                print(f"the tokenizer has no {EOT}: documents end with its {token} (id {token_id}) instead")
            return token, token_id
    special = [t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special]
    raise PrepareError(f"the tokenizer has no {EOT} nor another known end-of-text token "
                       f"({', '.join(EOT_ALTERNATIVES)}); its special tokens are "
                       f"{', '.join(map(repr, special)) or 'none'}: name the one to use with --eot-token")


# ---------------------------------------------------------------- encoding

def batched(items, max_items=BATCH_DOCS, max_chars=BATCH_CHARS):
    batch, chars = [], 0
    for item in items:
        batch.append(item)
        chars += len(item[1])
        if len(batch) >= max_items or chars >= max_chars:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def doc_items(docs):
    """(is_val, piece, ends_document, progress) for each piece of each document."""
    for is_val, doc in docs:
        previous = None
        for piece in doc.pieces():
            if previous is not None:
                yield is_val, previous[0], False, previous[1]
            previous = piece
        text, progress = previous or ("", doc.progress)
        yield is_val, text, True, progress


_DONE = object()


def in_background(iterable, depth=2):
    """Iterate iterable in a thread, depth items ahead: reading and parsing overlap encode_batch
    (which releases the GIL). Its exceptions are raised here; closing this generator stops it."""
    items, stop = queue.Queue(depth), threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def run():
        iterator = iter(iterable)
        try:
            for item in iterator:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as e:  # noqa: B902 - handed over to the consumer
            put((_DONE, e))
        finally:
            if hasattr(iterator, "close"):
                iterator.close()

    thread = threading.Thread(target=run, name="prepare-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, tuple) and len(item) == 2 and item[0] is _DONE:
                raise item[1]
            yield item
    finally:
        stop.set()
        thread.join(timeout=10)


def encode_into(tokenizer, eot_id, docs, writers, total, unit, progress=True):
    """Encode (is_val, doc) pairs, each document followed by eot_id, into writers[is_val].
    Returns (documents, characters) per side."""
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)  # no offsets: faster
    counts = {False: [0, 0], True: [0, 0]}
    dtypes = {side: writer.dtype for side, writer in writers.items()}
    with tqdm(total=total, unit=unit, unit_scale=True, desc="tokenizing", disable=not progress,
              smoothing=0.05) as bar:
        batches = in_background(batched(doc_items(docs)))
        try:
            for batch in batches:
                encodings = encode([item[1] for item in batch], add_special_tokens=False)
                ids = {False: [], True: []}
                done = 0
                for (is_val, text, ends, step), encoding in zip(batch, encodings):
                    side = ids[is_val]
                    side.extend(encoding.ids)
                    counts[is_val][1] += len(text)
                    if ends:
                        side.append(eot_id)
                        counts[is_val][0] += 1
                    done += step
                for is_val, side in ids.items():
                    if side:
                        writers[is_val].write(np.array(side, dtype=dtypes[is_val]))
                bar.update(done)
        finally:
            batches.close()
    return counts


# ---------------------------------------------------------------- the folder

def clear_stale(out_dir):
    """Remove meta.json first (the folder is incomplete from now on), then the shards and
    token files of an earlier run, finished or not."""
    for name in ("meta.json", "meta.json.tmp"):
        (out_dir / name).unlink(missing_ok=True)
    for entry in os.scandir(out_dir):
        if STALE.match(entry.name) and entry.is_file():
            os.remove(entry.path)


def write_json_atomic(path, value):
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:  # make the renames durable too
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def prepare(source=None, out_dir=None, vocab_size=1000, val_fraction=0.1, *, text_field="text",
            hf_dataset=None, hf_config=None, hf_split="train", hf_data_files=None, tokenizer=None,
            eot_token=None, tokenizer_sample_bytes=100_000_000, shard_tokens=100_000_000, progress=True):
    """Build a dataset folder from source (None: the stdlib corpus; a text file; a folder; a
    .jsonl / .jsonl.gz / .parquet file) or from the Hugging Face dataset hf_dataset.

    tokenizer: None trains a byte-level BPE of vocab_size ids; else a tokenizer.json path or a
    Hugging Face hub name. Returns the meta dict that is also written to out_dir/meta.json."""
    if tokenizer is None and not 257 <= vocab_size <= 2**32:
        raise PrepareError(f"vocab size {vocab_size} is out of range: a byte-level BPE needs at "
                           "least 257 (256 bytes + <|endoftext|>), and uint32 ids allow at most 2**32")
    if not 0 <= val_fraction < 1:
        raise PrepareError(f"--val-fraction {val_fraction} is out of range: give a fraction in [0, 1)")
    if not 1 <= shard_tokens <= MAX_SHARD_TOKENS:
        raise PrepareError(f"--shard-tokens {shard_tokens} is out of range: 1 to {MAX_SHARD_TOKENS:,} "
                           "(a shard header's count is an int32)")
    if tokenizer_sample_bytes < 1:
        raise PrepareError(f"--tokenizer-sample-bytes {tokenizer_sample_bytes} must be positive")
    out_dir = Path(out_dir) if out_dir else DEFAULT_DIR
    src = open_source(source, val_fraction, text_field, hf_dataset, hf_config, hf_split, hf_data_files)
    given, given_path = load_tokenizer(tokenizer) if tokenizer is not None else (None, None)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PrepareError(f"cannot create the dataset folder {out_dir}: {e.strerror}") from None
    clear_stale(out_dir)

    if given is None:
        chars = [0]

        def counted(texts):
            for text in texts:
                chars[0] += len(text)
                yield text
        tok = train_tokenizer(counted(sample_texts(src, val_fraction, tokenizer_sample_bytes)), vocab_size)
        if chars[0] == 0:
            raise PrepareError(f"the text in {src.description} is empty")
        tokenizer_from = f"byte-level BPE trained here on {chars[0]:,} characters of train text"
        tok.save(str(out_dir / "tokenizer.json"))
    else:
        tok = given
        tokenizer_from = str(given_path.resolve()) if given_path else f"Hugging Face hub: {tokenizer}"
        target = out_dir / "tokenizer.json"
        if given_path is None:
            tok.save(str(target))
        elif not (target.exists() and os.path.samefile(given_path, target)):
            shutil.copyfile(given_path, target)
    eot, eot_id = end_token(tok, eot_token) if given is not None else (EOT, tok.token_to_id(EOT))
    # Special tokens written in a document (a literal "<|endoftext|>") are encoded as the text
    # they are, as tiktoken's encode_ordinary does: the end-of-text id only ends documents.
    # (A setting of this tokenizer object only: the saved tokenizer.json does not have it.)
    if hasattr(tok, "encode_special_tokens"):
        tok.encode_special_tokens = True
    ids_size = max(tok.get_vocab(with_added_tokens=True).values()) + 1
    dtype = token_dtype(ids_size)

    writers = {False: ShardWriter(out_dir, "train", dtype, shard_tokens),
               True: ShardWriter(out_dir, "val", dtype, shard_tokens)}
    try:
        counts = encode_into(tok, eot_id, assigned(src, val_fraction), writers, src.total, src.unit, progress)
        if counts[False][0] + counts[True][0] == 0:
            raise PrepareError(f"{src.description} holds no documents (the text is empty)")
        splits = {"train": writers[False].close(), "val": writers[True].close()}
    finally:
        for writer in writers.values():
            writer.abort()
    meta = {
        "vocab_size": ids_size,
        "dtype": dtype.name,
        "tokenizer": "tokenizer.json",
        "eot_token": eot,
        "eot_id": eot_id,
        "train_tokens": splits["train"]["tokens"],
        "val_tokens": splits["val"]["tokens"],
        "splits": splits,
        "train_docs": counts[False][0],
        "val_docs": counts[True][0],
        "source": src.description,
        "text_field": text_field if not isinstance(src, (TextFileSource, TextFolderSource)) else None,
        "tokenizer_from": tokenizer_from,
        "shard_tokens": shard_tokens,
    }
    write_json_atomic(out_dir / "meta.json", meta)
    total_chars = counts[False][1] + counts[True][1]
    total_tokens = meta["train_tokens"] + meta["val_tokens"]
    print(f"wrote {out_dir}: {meta['train_tokens']:,} train and {meta['val_tokens']:,} val tokens in "
          f"{len(splits['train']['shards'])} + {len(splits['val']['shards'])} shards "
          f"({total_chars / max(1, total_tokens):.2f} characters per token)")
    return meta


def size(text):
    """An integer with an optional K / M / G suffix (powers of 1000): 100M, 1.5G, 100_000_000."""
    text = str(text).strip().replace("_", "")
    scale = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}.get(text[-1:].upper(), 1)
    try:
        return int(float(text[:-1] if scale > 1 else text) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 100M, 1G, 5000)") from None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", help="a text file, a .jsonl / .jsonl.gz / .parquet file, or a folder "
                        "of either (default: this Python's standard library source)")
    parser.add_argument("--out", help=f"dataset folder to write (default: {DEFAULT_DIR})")
    parser.add_argument("--text-field", default="text", help="the JSON field / parquet column / dataset "
                        "column holding each document (default: text)")
    parser.add_argument("--hf-dataset", metavar="NAME", help="a Hugging Face dataset, streamed with `datasets`")
    parser.add_argument("--hf-config", metavar="C", help="its configuration (e.g. sample-10BT)")
    parser.add_argument("--hf-split", metavar="S", default="train", help="its split to read (default: train)")
    parser.add_argument("--hf-data-files", metavar="F", nargs="+",
                        help="data files for a builder dataset (--hf-dataset json / parquet / text)")
    parser.add_argument("--tokenizer", metavar="FILE|NAME", help="use this tokenizer.json (or hub name, "
                        "e.g. gpt2) instead of training one")
    parser.add_argument("--eot-token", help="the token that ends each document, with --tokenizer "
                        f"(default: {EOT}, else a known end token)")
    parser.add_argument("--vocab-size", type=int, default=None, help="ids of the trained tokenizer "
                        "(default 1000; not with --tokenizer)")
    parser.add_argument("--tokenizer-sample-bytes", type=size, default=100_000_000,
                        help="bytes of train text to train the tokenizer on (default 100M)")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--shard-tokens", type=size, default=100_000_000,
                        help="tokens per shard file (default 100M)")
    args = parser.parse_args(argv)
    if args.tokenizer is not None and args.vocab_size is not None:
        print(f"note: --vocab-size applies to a trained tokenizer; {args.tokenizer} keeps its own", file=sys.stderr)
    try:
        prepare(args.source, args.out, args.vocab_size or 1000, args.val_fraction, text_field=args.text_field,
                hf_dataset=args.hf_dataset, hf_config=args.hf_config, hf_split=args.hf_split,
                hf_data_files=args.hf_data_files, tokenizer=args.tokenizer, eot_token=args.eot_token,
                tokenizer_sample_bytes=args.tokenizer_sample_bytes, shard_tokens=args.shard_tokens)
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
