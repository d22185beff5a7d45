"""data/prepare.py on a small corpus made here: files, counts, split, tokenizer round-trip."""
import json

import numpy as np
import pytest
from tokenizers import Tokenizer

from data.prepare import PrepareError, prepare

TEXTS = {
    f"mod_{i}.py": "".join(f"def function_{i}_{j}(x, y):\n    return x * {j} + y  # {'é' if j % 5 == 0 else ''}\n\n"
                           for j in range(40))
    for i in range(12)
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    for name, text in TEXTS.items():
        (root / name).write_text(text, encoding="utf-8")
    (root / "image.bin").write_bytes(b"\x89PNG\0\0binary")  # skipped: not text
    return root


def test_prepare_folder(corpus, tmp_path):
    meta = prepare(corpus, tmp_path / "ds", vocab_size=300)
    for name in ("train.bin", "val.bin", "tokenizer.json", "meta.json"):
        assert (tmp_path / "ds" / name).exists()
    assert json.loads((tmp_path / "ds" / "meta.json").read_text()) == meta
    assert meta["vocab_size"] == 300
    assert meta["train_files"] + meta["val_files"] == len(TEXTS)  # the binary file was skipped
    assert meta["val_files"] >= 1 and meta["train_files"] > meta["val_files"]
    train = np.fromfile(tmp_path / "ds" / "train.bin", dtype=np.uint16)
    val = np.fromfile(tmp_path / "ds" / "val.bin", dtype=np.uint16)
    assert len(train) == meta["train_tokens"] and len(val) == meta["val_tokens"]
    assert train.max() < 300 and val.max() < 300

    # The token files decode back to exactly the files' text, each followed by <|endoftext|>.
    tokenizer = Tokenizer.from_file(str(tmp_path / "ds" / "tokenizer.json"))
    decoded = tokenizer.decode(np.concatenate([train, val]).tolist(), skip_special_tokens=False)
    pieces = [p for p in decoded.split("<|endoftext|>") if p]
    assert sorted(pieces) == sorted(TEXTS.values())


def test_prepare_is_deterministic(corpus, tmp_path):
    prepare(corpus, tmp_path / "a", vocab_size=300)
    prepare(corpus, tmp_path / "b", vocab_size=300)
    for name in ("train.bin", "val.bin"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_tokenizer_round_trip(corpus, tmp_path):
    prepare(corpus, tmp_path / "ds", vocab_size=300)
    tokenizer = Tokenizer.from_file(str(tmp_path / "ds" / "tokenizer.json"))
    text = "def unseen_name(a, b):\n    return a ** b  # ünïcödé ✓\n"
    assert tokenizer.decode(tokenizer.encode(text).ids) == text


def test_prepare_one_file_splits_by_position(tmp_path):
    source = tmp_path / "book.txt"
    source.write_text("".join(f"line {i} of the book\n" for i in range(500)))
    meta = prepare(source, tmp_path / "ds", vocab_size=280)
    assert meta["train_tokens"] > 5 * meta["val_tokens"] > 0


@pytest.mark.parametrize("make_source, message", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "no text files"),
    (lambda p: (p / "blank.txt").write_text("") or p / "blank.txt", "empty"),
])
def test_prepare_bad_input(tmp_path, make_source, message):
    with pytest.raises(PrepareError, match=message):
        prepare(make_source(tmp_path), tmp_path / "ds", vocab_size=300)


def test_prepare_bad_vocab(corpus, tmp_path):
    with pytest.raises(PrepareError, match="at least 257"):
        prepare(corpus, tmp_path / "ds", vocab_size=100)
