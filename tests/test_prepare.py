"""data/prepare.py on small corpora made here: every source kind, shards vs meta.json, split,
tokenizer round-trip, given tokenizers (uint32 ids), interrupted runs, bad input."""
import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from tokenizers import Tokenizer

from data import prepare as prepare_module
from data.prepare import PrepareError, cut_point, pieces, prepare
from data.shards import HEADER_BYTES, ShardWriter, is_shard, read_shard

TEXTS = {
    f"mod_{i}.py": "".join(f"def function_{i}_{j}(x, y):\n    return x * {j} + y  # {'é' if j % 5 == 0 else ''}\n\n"
                           for j in range(40))
    for i in range(12)
}
DOCS = [f"Story {i}: the {'cat' if i % 3 else 'dog'} sat on mat number {i * 7}.\nIt was {'happy' if i % 2 else 'sad'}. ✓"
        for i in range(60)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    for name, text in TEXTS.items():
        (root / name).write_text(text, encoding="utf-8")
    (root / "image.bin").write_bytes(b"\x89PNG\0\0binary")  # skipped: not text
    return root


def write_jsonl(path, docs, field="text", opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        for i, doc in enumerate(docs):
            f.write(json.dumps({"id": i, field: doc}) + "\n")
    return path


def write_parquet(path, docs, field="text", row_group_size=16):
    pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed: the parquet source needs it")
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"id": list(range(len(docs))), field: docs}), path, row_group_size=row_group_size)
    return path


def check_folder(out, meta):
    """meta.json equals meta; every shard's header, count and max_id agree with it; returns
    {split: decoded documents} (the text between end-of-text tokens)."""
    assert json.loads((out / "meta.json").read_text()) == meta
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]
    tokenizer = Tokenizer.from_file(str(out / meta["tokenizer"]))
    assert tokenizer.token_to_id(meta["eot_token"]) == meta["eot_id"]
    docs = {}
    for split in ("train", "val"):
        entry = meta["splits"][split]
        assert entry["tokens"] == meta[f"{split}_tokens"] > 0
        parts = []
        for shard in entry["shards"]:
            path = out / shard["file"]
            assert is_shard(path)
            ids = read_shard(path)
            assert ids.dtype == np.dtype(meta["dtype"])
            assert len(ids) == shard["tokens"] and int(ids.max()) == shard["max_id"]
            assert os.path.getsize(path) == HEADER_BYTES + len(ids) * ids.dtype.itemsize
            parts.append(np.asarray(ids))
        ids = np.concatenate(parts)
        assert len(ids) == entry["tokens"] and int(ids.max()) == entry["max_id"] < meta["vocab_size"]
        assert ids[-1] == meta["eot_id"]
        assert sum(s["tokens"] for s in entry["shards"]) == entry["tokens"]
        ends = np.flatnonzero(ids == meta["eot_id"])
        starts = np.concatenate([[0], ends[:-1] + 1])
        docs[split] = [tokenizer.decode(ids[a:b].tolist(), skip_special_tokens=False) for a, b in zip(starts, ends)]
        assert len(docs[split]) == meta[f"{split}_docs"]
    stale = {f for f in os.listdir(out) if f.endswith(".bin")} - \
        {s["file"] for e in meta["splits"].values() for s in e["shards"]}
    assert not stale
    return docs


def test_prepare_folder(corpus, tmp_path):
    meta = prepare(corpus, tmp_path / "ds", vocab_size=300)
    for name in ("train_000000.bin", "val_000000.bin", "tokenizer.json", "meta.json"):
        assert (tmp_path / "ds" / name).exists()
    assert meta["vocab_size"] == 300 and meta["dtype"] == "uint16"
    assert meta["train_docs"] + meta["val_docs"] == len(TEXTS)  # the binary file was skipped
    assert meta["val_docs"] >= 1 and meta["train_docs"] > meta["val_docs"]
    # The shards decode back to exactly the files' text, each followed by <|endoftext|>.
    docs = check_folder(tmp_path / "ds", meta)
    assert sorted(docs["train"] + docs["val"]) == sorted(TEXTS.values())


def test_prepare_is_deterministic(corpus, tmp_path):
    a = prepare(corpus, tmp_path / "a", vocab_size=300)
    b = prepare(corpus, tmp_path / "b", vocab_size=300)
    assert a["splits"] == b["splits"]
    for entry in a["splits"].values():
        for shard in entry["shards"]:
            assert (tmp_path / "a" / shard["file"]).read_bytes() == (tmp_path / "b" / shard["file"]).read_bytes()


def test_tokenizer_round_trip(corpus, tmp_path):
    prepare(corpus, tmp_path / "ds", vocab_size=300)
    tokenizer = Tokenizer.from_file(str(tmp_path / "ds" / "tokenizer.json"))
    text = "def unseen_name(a, b):\n    return a ** b  # ünïcödé ✓\n"
    assert tokenizer.decode(tokenizer.encode(text).ids) == text


def test_prepare_one_file_splits_by_position(tmp_path):
    source = tmp_path / "book.txt"
    text = "".join(f"line {i} of the book\n" for i in range(500))
    source.write_text(text)
    meta = prepare(source, tmp_path / "ds", vocab_size=280)
    assert meta["train_tokens"] > 5 * meta["val_tokens"] > 0
    docs = check_folder(tmp_path / "ds", meta)
    assert len(docs["train"]) == len(docs["val"]) == 1
    assert docs["train"][0] + docs["val"][0] == text and docs["val"][0].startswith("line ")


def test_jsonl_source(tmp_path):
    meta = prepare(write_jsonl(tmp_path / "docs.jsonl", DOCS), tmp_path / "ds", vocab_size=300)
    docs = check_folder(tmp_path / "ds", meta)
    assert sorted(docs["train"] + docs["val"]) == sorted(DOCS)
    assert 1 <= meta["val_docs"] < meta["train_docs"]
    assert docs["train"] == [d for d in DOCS if d in set(docs["train"])]  # in order


def test_jsonl_gz_source_and_text_field(tmp_path):
    source = write_jsonl(tmp_path / "docs.jsonl.gz", DOCS, field="story", opener=gzip.open)
    meta = prepare(source, tmp_path / "ds", vocab_size=300, text_field="story")
    assert meta["text_field"] == "story"
    docs = check_folder(tmp_path / "ds", meta)
    assert sorted(docs["train"] + docs["val"]) == sorted(DOCS)
    # the same documents give the same split whichever the file's format
    plain = prepare(write_jsonl(tmp_path / "docs.jsonl", DOCS), tmp_path / "plain", vocab_size=300)
    assert plain["splits"] == meta["splits"]


def test_parquet_source(tmp_path):
    source = write_parquet(tmp_path / "docs.parquet", DOCS)
    meta = prepare(source, tmp_path / "ds", vocab_size=300)
    docs = check_folder(tmp_path / "ds", meta)
    assert sorted(docs["train"] + docs["val"]) == sorted(DOCS)
    jsonl = prepare(write_jsonl(tmp_path / "docs.jsonl", DOCS), tmp_path / "jsonl", vocab_size=300)
    assert jsonl["splits"] == meta["splits"]


def test_folder_of_data_files(tmp_path):
    root = tmp_path / "data"
    (root / "b").mkdir(parents=True)
    write_jsonl(root / "a.jsonl", DOCS[:20])
    write_jsonl(root / "b" / "c.jsonl.gz", DOCS[20:40], opener=gzip.open)
    write_parquet(root / "b" / "d.parquet", DOCS[40:])
    (root / "README.md").write_text("not a document")
    meta = prepare(root, tmp_path / "ds", vocab_size=300)
    docs = check_folder(tmp_path / "ds", meta)
    assert sorted(docs["train"] + docs["val"]) == sorted(DOCS)


@pytest.fixture
def offline_hf(tmp_path, monkeypatch):
    """The `datasets` library, offline, with an empty cache of its own."""
    pytest.importorskip("datasets", reason="the `datasets` library is not installed (pip install datasets)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))


def test_hf_dataset_on_a_local_file(tmp_path, offline_hf):
    source = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    meta = prepare(out_dir=tmp_path / "ds", vocab_size=300, hf_dataset="json", hf_data_files=[str(source)])
    docs = check_folder(tmp_path / "ds", meta)
    assert sorted(docs["train"] + docs["val"]) == sorted(DOCS)
    assert meta["source"].startswith("Hugging Face dataset json")
    # the same split as the file read directly: documents hash by index either way
    direct = prepare(source, tmp_path / "direct", vocab_size=300)
    assert direct["splits"] == meta["splits"]


def test_hf_dataset_parquet_builder(tmp_path, offline_hf):
    source = write_parquet(tmp_path / "docs.parquet", DOCS)
    meta = prepare(out_dir=tmp_path / "ds", vocab_size=300, hf_dataset="parquet", hf_data_files=[str(source)])
    docs = check_folder(tmp_path / "ds", meta)
    assert sorted(docs["train"] + docs["val"]) == sorted(DOCS)


def test_hf_dataset_unreachable(tmp_path, offline_hf):
    with pytest.raises(PrepareError, match="(?s)cannot load the Hugging Face dataset 'nobody/nothing'.*"
                                           "HF_HUB_OFFLINE=1.*--source"):
        prepare(out_dir=tmp_path / "ds", hf_dataset="nobody/nothing")


def test_hf_dataset_without_datasets(tmp_path, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(PrepareError, match="needs the `datasets` library: pip install datasets"):
        prepare(out_dir=tmp_path / "ds", hf_dataset="roneneldan/TinyStories")


def wordlevel_tokenizer(path, size=70_000, special="<|endoftext|>"):
    """A tokenizer.json of size words w0 ... plus special: ids above 65,535."""
    from tokenizers import models, pre_tokenizers
    vocab = {f"w{i}": i for i in range(size)}
    vocab["[UNK]"] = size
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if special:
        tokenizer.add_special_tokens([special])
    tokenizer.save(str(path))
    return tokenizer


def test_given_tokenizer_with_uint32_ids(tmp_path):
    wordlevel_tokenizer(tmp_path / "big.json")
    docs = [" ".join(f"w{(i * 7919 + j * 104729) % 70_000}" for j in range(30)) for i in range(40)]
    meta = prepare(write_jsonl(tmp_path / "docs.jsonl", docs), tmp_path / "ds", vocab_size=5, tokenizer=tmp_path / "big.json")
    assert meta["dtype"] == "uint32" and meta["vocab_size"] == 70_002 and meta["eot_id"] == 70_001
    assert (tmp_path / "ds" / "tokenizer.json").read_bytes() == (tmp_path / "big.json").read_bytes()
    decoded = check_folder(tmp_path / "ds", meta)
    assert sorted(decoded["train"] + decoded["val"]) == sorted(docs)
    assert max(meta["splits"]["train"]["max_id"], meta["splits"]["val"]["max_id"]) > 65_535
    with open(tmp_path / "ds" / meta["splits"]["train"]["shards"][0]["file"], "rb") as f:
        assert tuple(np.frombuffer(f.read(8), dtype="<i4")) == (20240801, 7)


def test_given_tokenizer_end_token(tmp_path):
    source = write_jsonl(tmp_path / "docs.jsonl", ["w1 w2", "w3", "w4 w5 w6"])
    wordlevel_tokenizer(tmp_path / "s.json", size=10, special="</s>")
    meta = prepare(source, tmp_path / "ds", tokenizer=tmp_path / "s.json")
    assert meta["eot_token"] == "</s>" and meta["eot_id"] == 11 and meta["dtype"] == "uint16"
    check_folder(tmp_path / "ds", meta)
    meta = prepare(source, tmp_path / "ds", tokenizer=tmp_path / "s.json", eot_token="w9")
    assert meta["eot_id"] == 9
    wordlevel_tokenizer(tmp_path / "none.json", size=10, special="<pad>")
    with pytest.raises(PrepareError, match="has no <\\|endoftext\\|>.*special tokens are '<pad>'.*--eot-token"):
        prepare(source, tmp_path / "ds", tokenizer=tmp_path / "none.json")
    with pytest.raises(PrepareError, match="--eot-token 'nope' is not in the tokenizer"):
        prepare(source, tmp_path / "ds", tokenizer=tmp_path / "s.json", eot_token="nope")


def test_hub_tokenizer_offline_error(tmp_path, monkeypatch, corpus):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(PrepareError, match="(?s)--tokenizer gpt2: .*not in the local cache.*"
                                           "tokenizer.json.*--tokenizer PATH/tokenizer.json"):
        prepare(corpus, tmp_path / "ds", tokenizer="gpt2")
    with pytest.raises(PrepareError, match="tokenizer file .*missing.json does not exist"):
        prepare(corpus, tmp_path / "ds", tokenizer=tmp_path / "missing.json")


def test_many_shards(tmp_path):
    meta = prepare(write_jsonl(tmp_path / "docs.jsonl", DOCS), tmp_path / "ds", vocab_size=300, shard_tokens=97)
    assert len(meta["splits"]["train"]["shards"]) > 3 and len(meta["splits"]["val"]["shards"]) >= 1
    assert [s["file"] for s in meta["splits"]["train"]["shards"]][:2] == ["train_000000.bin", "train_000001.bin"]
    assert all(s["tokens"] == 97 for e in meta["splits"].values() for s in e["shards"][:-1])
    docs = check_folder(tmp_path / "ds", meta)
    assert sorted(docs["train"] + docs["val"]) == sorted(DOCS)
    # a rerun with bigger shards leaves none of the earlier run's
    meta = prepare(write_jsonl(tmp_path / "docs.jsonl", DOCS), tmp_path / "ds", vocab_size=300)
    assert len(meta["splits"]["train"]["shards"]) == 1
    check_folder(tmp_path / "ds", meta)


def test_interrupted_run_leaves_no_meta_and_reruns(tmp_path, monkeypatch):
    source = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    out = tmp_path / "ds"
    prepare(source, out, vocab_size=300, shard_tokens=50)  # an earlier, complete run
    (out / "train.bin").write_bytes(b"\0" * 8)  # and an old-layout file
    writes = []
    real_write = ShardWriter.write

    def failing_write(self, ids):
        writes.append(len(ids))
        if len(writes) == 2:
            raise KeyboardInterrupt("interrupted")
        real_write(self, ids)
    monkeypatch.setattr(ShardWriter, "write", failing_write)
    monkeypatch.setattr(prepare_module.batched, "__defaults__", (8, prepare_module.BATCH_CHARS))
    with pytest.raises(KeyboardInterrupt):
        prepare(source, out, vocab_size=300, shard_tokens=50)
    assert not (out / "meta.json").exists()
    assert not [p for p in os.listdir(out) if p.endswith(".tmp") or p == "train.bin"]
    monkeypatch.setattr(ShardWriter, "write", real_write)
    meta = prepare(source, out, vocab_size=300, shard_tokens=50)
    docs = check_folder(out, meta)
    assert sorted(docs["train"] + docs["val"]) == sorted(DOCS)


def test_tiny_inputs_get_both_sides(tmp_path):
    for n in (1, 2, 3):
        meta = prepare(write_jsonl(tmp_path / f"{n}.jsonl", [f"doc {i}\nline two of {i}" for i in range(n)]),
                       tmp_path / f"ds{n}", vocab_size=270)
        docs = check_folder(tmp_path / f"ds{n}", meta)
        assert docs["train"] and docs["val"]
        if n == 1:
            assert docs["train"][0] + docs["val"][0] == "doc 0\nline two of 0"
        else:
            assert len(docs["train"]) + len(docs["val"]) == n


def test_long_documents_are_cut_at_pre_token_boundaries(tmp_path, corpus):
    prepare(corpus, tmp_path / "ds", vocab_size=300)
    tokenizer = Tokenizer.from_file(str(tmp_path / "ds" / "tokenizer.json"))
    text = "".join(TEXTS.values()) + "  spaced   words\n\n  \n" * 50 + "a, b; c " * 300
    parts = [p for p, _ in pieces([(text[:5000], 1), (text[5000:], 2)], limit=700)]
    assert "".join(parts) == text and max(map(len, parts)) <= 700 and len(parts) > 20
    whole = tokenizer.encode(text).ids
    assert [i for p in parts for i in tokenizer.encode(p).ids] == whole
    assert cut_point("ab\ncd" * 100, 0, 50) % 5 == 3  # after a newline between non-spaces
    # no boundary at all: cut at the limit (the one place where the encoding may differ)
    assert "".join(p for p, _ in pieces([("x" * 3000, 1)], limit=700)) == "x" * 3000
    assert sum(step for _, step in pieces([("ab\ncd" * 300, 3), ("ef gh" * 200, 4)], limit=100)) == 7


def make(path, content):
    """path, after writing content (str or bytes) to it."""
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


@pytest.mark.parametrize("make_source, message", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "no text files"),
    (lambda p: make(p / "blank.txt", ""), "empty"),
    (lambda p: make(p / "blank.jsonl", "\n\n"), "empty"),
    (lambda p: make(p / "data.txt.gz", gzip.compress(b"text")), "data.txt.gz is not a text file"),
    (lambda p: make(p / "bad.jsonl", '{"text": "a"}\n{"text": oops}\n'),
     "bad.jsonl, line 2 is not valid JSON"),
    (lambda p: make(p / "list.jsonl", '["a"]\n'), "line 1 is a JSON list, not an object"),
    (lambda p: make(p / "field.jsonl", '{"text": "a"}\n{"body": "b", "id": 1}\n'),
     "line 2 has no field 'text'; its fields are 'body', 'id': choose one with --text-field"),
    (lambda p: make(p / "num.jsonl", '{"text": "a"}\n\n{"text": 5}\n'),
     "line 3: field 'text' is a JSON int, not a string"),
    (lambda p: make(p / "null.jsonl", '{"text": null}\n'), "is a JSON null, not a string"),
    (lambda p: make(p / "bad.jsonl.gz", b"not gzip at all"), "cannot read .*bad.jsonl.gz"),
])
def test_prepare_bad_input(tmp_path, make_source, message):
    with pytest.raises(PrepareError, match=message):
        prepare(make_source(tmp_path), tmp_path / "ds", vocab_size=300)
    assert not (tmp_path / "ds" / "meta.json").exists()


def test_parquet_bad_input(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed: the parquet source needs it")
    import pyarrow.parquet as pq
    write_parquet(tmp_path / "body.parquet", DOCS, field="body")
    with pytest.raises(PrepareError, match="has no column 'text'; its columns are 'id', 'body': choose one with --text-field"):
        prepare(tmp_path / "body.parquet", tmp_path / "ds", vocab_size=300)
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "ints.parquet")
    with pytest.raises(PrepareError, match="column 'text' holds int64, not strings"):
        prepare(tmp_path / "ints.parquet", tmp_path / "ds", vocab_size=300)
    pq.write_table(pa.table({"text": ["a", "b", None]}), tmp_path / "null.parquet")
    with pytest.raises(PrepareError, match="row 3: column 'text' is null"):
        prepare(tmp_path / "null.parquet", tmp_path / "ds", vocab_size=300)
    (tmp_path / "junk.parquet").write_bytes(b"junk")
    with pytest.raises(PrepareError, match="not a readable parquet file"):
        prepare(tmp_path / "junk.parquet", tmp_path / "ds", vocab_size=300)


@pytest.mark.parametrize("kwargs, message", [
    ({"vocab_size": 100}, "at least 257"),
    ({"vocab_size": 2**33}, "out of range"),
    ({"val_fraction": 1.0}, "--val-fraction 1.0 is out of range"),
    ({"shard_tokens": 0}, "--shard-tokens 0 is out of range"),
])
def test_prepare_bad_settings(corpus, tmp_path, kwargs, message):
    with pytest.raises(PrepareError, match=message):
        prepare(corpus, tmp_path / "ds", **{"vocab_size": 300, **kwargs})


def test_cli(tmp_path, capsys):
    source = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    prepare_module.main(["--source", str(source), "--out", str(tmp_path / "ds"), "--vocab-size", "300",
                         "--shard-tokens", "1K", "--tokenizer-sample-bytes", "1M"])
    meta = json.loads((tmp_path / "ds" / "meta.json").read_text())
    assert meta["shard_tokens"] == 1000
    check_folder(tmp_path / "ds", meta)
    with pytest.raises(SystemExit) as exit_info:
        prepare_module.main(["--source", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2 and "does not exist" in capsys.readouterr().err


def test_long_text_files_stream_in_blocks_and_pieces(tmp_path, monkeypatch):
    """Files read in small blocks (multi-byte characters and \\r\\n split across them) and cut into
    pieces decode back to their text, newlines translated as Path.read_text does."""
    monkeypatch.setattr(prepare_module, "BLOCK_BYTES", 777)
    monkeypatch.setattr(prepare_module.pieces, "__defaults__", (500,))
    root = tmp_path / "texts"
    root.mkdir()
    texts = {f"f{i}.txt": "".join(f"línea {j} de {i}: ünïcödé ✓ text\r\n" for j in range(300 + 50 * i)) for i in range(4)}
    for name, text in texts.items():
        (root / name).write_bytes(text.encode("utf-8"))
    meta = prepare(root, tmp_path / "ds", vocab_size=300)
    docs = check_folder(tmp_path / "ds", meta)
    assert sorted(docs["train"] + docs["val"]) == sorted(t.replace("\r\n", "\n") for t in texts.values())
    meta = prepare(root / "f3.txt", tmp_path / "one", vocab_size=300)  # one file, split by position
    docs = check_folder(tmp_path / "one", meta)
    assert docs["train"][0] + docs["val"][0] == texts["f3.txt"].replace("\r\n", "\n")


def test_literal_end_token_in_text_is_text(tmp_path):
    docs = DOCS[:10] + ["a story that quotes <|endoftext|> in its text", "and </s> too"]
    meta = prepare(write_jsonl(tmp_path / "docs.jsonl", docs), tmp_path / "ds", vocab_size=300)
    decoded = check_folder(tmp_path / "ds", meta)  # the eot id appears once per document only
    assert sorted(decoded["train"] + decoded["val"]) == sorted(docs)


def test_prepared_uint32_dataset_trains_and_samples(tmp_path):
    """End to end: a jsonl with a 70,002-id tokenizer -> uint32 shards -> training -> a decoded sample."""
    from conftest import ROOT, TINY, run_script
    wordlevel_tokenizer(tmp_path / "big.json")
    docs = [" ".join(f"w{(i * 7919 + j * 104729) % 70_000}" for j in range(30)) for i in range(60)]
    source = write_jsonl(tmp_path / "docs.jsonl", docs)
    run_script_prepare = [sys.executable, os.path.join(ROOT, "data", "prepare.py"), "--source", str(source),
                          "--out", str(tmp_path / "ds"), "--tokenizer", str(tmp_path / "big.json")]
    subprocess.run(run_script_prepare, check=True, capture_output=True, text=True)
    out = tmp_path / "out"
    result = run_script("--data", tmp_path / "ds", "--out-dir", out, *TINY, "--iters", 2, "--eval-interval", 2,
                        "--num-tokens", 5)
    assert "vocab_size=70002" in result.stdout, result.stdout
    sample = result.stdout.split("top-p")[-1]
    assert any(f"w{i}" in sample for i in range(70_000)) or "[UNK]" in sample, sample  # decoded words
