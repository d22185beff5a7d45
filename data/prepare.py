"""Prepare a token dataset for gpt_pretrain.py: text in, train.bin / val.bin out.

    python data/prepare.py                       # the default corpus: this Python's stdlib source
    python data/prepare.py --source my_text/     # a folder of text files (or one text file)
    python data/prepare.py --source book.txt --out data/book --vocab-size 2000

Writes into one dataset folder:
    train.bin, val.bin   raw uint16 token ids, np.fromfile(path, dtype=np.uint16)
    tokenizer.json       the byte-level BPE tokenizer (Hugging Face `tokenizers` format)
    meta.json            vocab size, token counts, where the text came from (written last,
                         so its presence means the folder is complete)

The default corpus is the Python standard library's own source (every *.py under
sysconfig's stdlib path, site-packages excluded): every Python install has it, so training
works offline on a fresh machine. Files are read in sorted order and split into train and
val by a hash of their path (about 10% val), so the split is the same on every run and does
not shift when a file is added. Each file ends with the <|endoftext|> token.
"""
import argparse
import json
import os
import sys
import sysconfig
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

EOT = "<|endoftext|>"
DEFAULT_DIR = Path(__file__).resolve().parent / "stdlib"


class PrepareError(Exception):
    """Bad input to prepare(): the message says what is wrong and how to fix it."""


def stdlib_files():
    """(root, sorted list of *.py paths) of this Python's standard library, no site-packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in root.rglob("*.py")
             if not ({"site-packages", "dist-packages"} & set(p.relative_to(root).parts))]
    return root, sorted(files, key=lambda p: p.relative_to(root).as_posix())


def text_files(source):
    """(root, sorted list of text files) under a folder; binary files (NUL bytes) are skipped."""
    root = Path(source)
    files = []
    for p in sorted(root.rglob("*"), key=lambda p: p.relative_to(root).as_posix()):
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts):
            with open(p, "rb") as f:
                if b"\0" not in f.read(8192):
                    files.append(p)
    return root, files


def read_texts(files, desc):
    # errors="replace": a stray non-UTF-8 byte should not stop the preparation of a corpus
    return [p.read_text(encoding="utf-8", errors="replace") for p in tqdm(files, desc=desc, unit="file")]


def split_train_val(root, files, texts, val_fraction):
    """Split by file using a hash of its relative path; one file is split by position instead."""
    if len(texts) == 1:
        text = texts[0]
        cut = int(len(text) * (1 - val_fraction))
        cut = text.rfind("\n", 0, cut) + 1 or cut  # at a line boundary where there is one
        return [text[:cut]], [text[cut:]]
    buckets = 1000
    is_val = [zlib.crc32(p.relative_to(root).as_posix().encode()) % buckets < val_fraction * buckets
              for p in files]
    if all(is_val) or not any(is_val):  # tiny corpora: force at least one file on each side
        is_val = [i == len(files) - 1 for i in range(len(files))]
    train = [t for t, v in zip(texts, is_val) if not v]
    val = [t for t, v in zip(texts, is_val) if v]
    return train, val


def train_tokenizer(texts, vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=True)
    print(f"training a byte-level BPE tokenizer, vocab size {vocab_size}")
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tokenizer


def write_tokens(tokenizer, texts, path, desc, chunk=256):
    """Encode texts (each followed by <|endoftext|>) into a uint16 file; returns the token count."""
    eot = tokenizer.token_to_id(EOT)
    count = 0
    tmp = path.with_suffix(".bin.tmp")
    with open(tmp, "wb") as f, tqdm(total=len(texts), desc=desc, unit="file") as bar:
        for start in range(0, len(texts), chunk):
            batch = texts[start:start + chunk]
            for encoding in tokenizer.encode_batch(batch):
                ids = np.asarray(encoding.ids + [eot], dtype=np.uint16)
                ids.tofile(f)
                count += len(ids)
            bar.update(len(batch))
    os.replace(tmp, path)
    return count


def prepare(source=None, out_dir=None, vocab_size=1000, val_fraction=0.1):
    """Build a dataset folder from source (None: the stdlib corpus; a text file; a folder).

    Returns the meta dict that is also written to out_dir/meta.json."""
    if not 257 <= vocab_size <= 65536:
        raise PrepareError(f"vocab size {vocab_size} is out of range: a byte-level BPE needs at "
                           "least 257 (256 bytes + <|endoftext|>), and uint16 ids allow at most 65536")
    out_dir = Path(out_dir) if out_dir else DEFAULT_DIR
    if source is None:
        root, files = stdlib_files()
        description = f"Python {sys.version.split()[0]} standard library source ({root})"
    else:
        source = Path(source)
        if source.is_file():
            root, files = source.parent, [source]
        elif source.is_dir():
            root, files = text_files(source)
        else:
            raise PrepareError(f"source {source} does not exist: give a text file or a folder of text files")
        description = str(source.resolve())
    if not files:
        raise PrepareError(f"no text files found in {source or root}")
    texts = read_texts(files, desc="reading text")
    if sum(len(t) for t in texts) == 0:
        raise PrepareError(f"the text in {source or root} is empty")
    train_texts, val_texts = split_train_val(root, files, texts, val_fraction)

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PrepareError(f"cannot create the dataset folder {out_dir}: {e.strerror}") from None
    (out_dir / "meta.json").unlink(missing_ok=True)  # the folder is incomplete until the end
    tokenizer = train_tokenizer(train_texts, vocab_size)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    train_tokens = write_tokens(tokenizer, train_texts, out_dir / "train.bin", "encoding train")
    val_tokens = write_tokens(tokenizer, val_texts, out_dir / "val.bin", "encoding val")
    meta = {
        "vocab_size": tokenizer.get_vocab_size(),
        "train_tokens": train_tokens,
        "val_tokens": val_tokens,
        "train_files": len(train_texts) if len(files) > 1 else 1,
        "val_files": len(val_texts) if len(files) > 1 else 1,
        "source": description,
        "tokenizer": "tokenizer.json",
        "eot_token": EOT,
        "eot_id": tokenizer.token_to_id(EOT),
        "dtype": "uint16",
    }
    with open(out_dir / "meta.json", "w") as f:
        json.dump(meta, f, indent=1)
    print(f"wrote {out_dir}: {train_tokens:,} train and {val_tokens:,} val tokens "
          f"({sum(len(t) for t in texts) / max(1, train_tokens + val_tokens):.2f} characters per token)")
    return meta


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", help="a text file or a folder of text files "
                        "(default: this Python's standard library source)")
    parser.add_argument("--out", help=f"dataset folder to write (default: {DEFAULT_DIR})")
    parser.add_argument("--vocab-size", type=int, default=1000)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    args = parser.parse_args(argv)
    try:
        prepare(args.source, args.out, args.vocab_size, args.val_fraction)
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
