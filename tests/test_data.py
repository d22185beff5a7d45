"""The training script's data path: token shards (llm.c's format, uint16 and uint32), dataset
folders, raw files, the id check, and the epoch order computed without materialising it."""
import json

import numpy as np
import pytest

from conftest import TINY, run_script
from data.shards import HEADER_BYTES, ShardError, largest_id, read_shard, shard_header
from gpt_pretrain import (DataError, EpochShuffler, TokenDataset, check_token_ids,
                          find_dataset, make_datasets, permute)


def write_shard(path, ids, dtype=np.uint16, count=None):
    ids = np.asarray(ids, dtype=dtype)
    with open(path, "wb") as f:
        f.write(shard_header(len(ids) if count is None else count, ids.dtype) + ids.astype("<" + ids.dtype.str[1:]).tobytes())
    return path


def write_dataset(folder, splits, vocab_size, dtype=np.uint16):
    """A folder in data/prepare.py's layout: {split: [ids of each shard]}."""
    folder.mkdir()
    meta = {"vocab_size": vocab_size, "dtype": np.dtype(dtype).name, "splits": {}}
    for split, shards in splits.items():
        entries = []
        for i, ids in enumerate(shards):
            write_shard(folder / f"{split}_{i:06d}.bin", ids, dtype)
            entries.append({"file": f"{split}_{i:06d}.bin", "tokens": len(ids), "max_id": int(max(ids))})
        meta["splits"][split] = {"tokens": sum(e["tokens"] for e in entries),
                                 "max_id": max(e["max_id"] for e in entries), "shards": entries}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000, 4099])
def test_permute_is_a_seeded_bijection(n):
    order = permute(np.arange(n), n, (5, 0))
    assert sorted(order.tolist()) == list(range(n))
    assert (permute(np.arange(n), n, (5, 0)) == order).all()  # the same seed, the same order
    if n >= 64:
        assert (permute(np.arange(n), n, (5, 1)) != order).mean() > 0.9  # another epoch, another order
        assert abs(np.corrcoef(np.arange(n), order)[0, 1]) < 0.2  # not close to the identity


def test_permute_at_corpus_scale_needs_no_memory_of_n():
    n = 9_000_000_000  # OpenWebText's token count: torch.randperm(n) would need 72 GB
    positions = np.array([0, 1, n // 2, n - 1])
    values = permute(positions, n, (1337, 3))
    assert ((0 <= values) & (values < n)).all() and len(set(values.tolist())) == 4


def test_epoch_shuffler_covers_each_window_once_per_epoch_and_resumes_exactly():
    sampler = EpochShuffler(100_003, seed=9)
    epoch0, epoch1 = list(sampler), list(sampler)
    assert sorted(epoch0) == list(range(100_003)) and epoch0 != epoch1
    resumed = EpochShuffler(100_003, seed=9, epoch=0, start=12_345)
    assert list(resumed) == epoch0[12_345:] and list(resumed) == epoch1
    shares = [list(EpochShuffler(100_003, seed=9, rank=r, world=3)) for r in range(3)]
    assert sum(map(len, shares)) == 100_002 and len(set().union(*shares)) == 100_002
    assert [w for trio in zip(*shares) for w in trio] == epoch0[:100_002]  # rank r: every 3rd


def test_windows_stay_inside_their_shard():
    shards = [np.arange(0, 20, dtype=np.uint16), np.arange(100, 105, dtype=np.uint16),
              np.arange(200, 230, dtype=np.uint16)]
    dataset = TokenDataset(shards, context_len=8)
    assert len(dataset) == (20 - 8) + 0 + (30 - 8) and dataset.num_tokens == 55
    for i in range(len(dataset)):
        x, y = dataset[i]
        assert (y[:-1] == x[1:]).all() and (x[1:] - x[:-1] == 1).all()  # contiguous: one shard
    assert dataset[12][0][0] == 200
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_a_bad_id_in_an_unchecked_window_is_a_clear_error():
    dataset = TokenDataset(np.array([1, 2, 3, 4, 5, 70], dtype=np.uint16), context_len=2, vocab_size=64)
    assert dataset[0][0].tolist() == [1, 2]
    with pytest.raises(DataError, match="token id 70.*--vocab-size 71"):
        dataset[3]


def test_shards_are_memory_mapped_and_checked(tmp_path):
    ids = np.random.default_rng(0).integers(0, 70_000, 5000)
    shard = read_shard(write_shard(tmp_path / "a.bin", ids, np.uint32))
    assert isinstance(shard, np.memmap) and shard.dtype == np.uint32 and (shard == ids).all()
    assert largest_id(tmp_path / "a.bin", np.uint32, HEADER_BYTES, len(ids), chunk=777) == ids.max()
    with pytest.raises(ShardError, match="truncated.*5,001"):
        read_shard(write_shard(tmp_path / "b.bin", ids, np.uint32, count=5001))
    with pytest.raises(ShardError, match="longer than its header says"):
        read_shard(write_shard(tmp_path / "c.bin", ids, np.uint32, count=4000))
    (tmp_path / "d.bin").write_bytes(np.full(600, 7, dtype="<i4").tobytes())
    with pytest.raises(ShardError, match="magic number 7"):
        read_shard(tmp_path / "d.bin")


def test_folders_of_every_kind_resolve(tmp_path):
    ours = write_dataset(tmp_path / "ours", {"train": [range(50), range(40)], "val": [range(30)]}, 64)
    data = find_dataset(str(ours), 64)
    assert [len(a) for a in data.train] == [50, 40] and [len(a) for a in data.val] == [30]
    assert data.max_id == 49 and data.vocab_size == 64  # from meta.json: no reading of the tokens
    llmc = tmp_path / "llmc"
    llmc.mkdir()
    for name, n in [("fineweb_val_000000.bin", 30), ("fineweb_train_000001.bin", 60), ("fineweb_train_000002.bin", 70)]:
        write_shard(llmc / name, np.arange(n) % 50)
    data = find_dataset(str(llmc), 64)
    assert [len(a) for a in data.train] == [60, 70] and [len(a) for a in data.val] == [30]
    assert data.max_id is None and data.vocab_size is None
    check_token_ids(data, 64, skip=False)
    assert data.max_id == 49
    with pytest.raises(DataError, match="token id 49.*--vocab-size 50"):
        check_token_ids(data, 40, skip=False)
    (llmc / "fineweb_train_000002.bin").write_bytes(b"\0" * 2000)
    with pytest.raises(DataError, match="magic number 0"):
        find_dataset(str(llmc), 64)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a dataset folder"):
        find_dataset(str(tmp_path / "empty"), 64)


def test_meta_json_and_shards_must_agree(tmp_path):
    folder = write_dataset(tmp_path / "ds", {"train": [range(50)], "val": [range(30)]}, 64)
    write_shard(folder / "train_000000.bin", range(45))
    with pytest.raises(DataError, match="45 tokens, its meta.json says 50"):
        find_dataset(str(folder), 64)


def test_skip_data_check_defers_to_the_windows(tmp_path):
    raw = tmp_path / "raw.bin"
    np.array([1, 2, 3] * 100 + [99], dtype=np.uint16).tofile(raw)
    data = find_dataset(str(raw), 64)
    check_token_ids(data, 64, skip=True)  # not read
    assert data.max_id is None
    train, val = make_datasets(data, 8, 64)
    with pytest.raises(DataError, match="token id 99"):
        val[len(val) - 1]


@pytest.mark.parametrize("layout", ["ours_uint32", "llmc_uint16"])
def test_training_runs_on_shard_folders(tmp_path, layout):
    rng = np.random.default_rng(1)
    if layout == "ours_uint32":  # a vocabulary past uint16: ids up to 70,000
        vocab = 70_001
        folder = write_dataset(tmp_path / "ds", {"train": [rng.integers(0, vocab, 3000), rng.integers(0, vocab, 2000)],
                                                 "val": [rng.integers(0, vocab, 1000)]}, vocab, np.uint32)
        flags = []
    else:
        vocab = 64
        folder = tmp_path / "ds"
        folder.mkdir()
        write_shard(folder / "corpus_train_000000.bin", rng.integers(0, vocab, 4000))
        write_shard(folder / "corpus_val_000000.bin", rng.integers(0, vocab, 1000))
        flags = ["--vocab-size", vocab]
    out = tmp_path / "out"
    result = run_script("--data", folder, "--out-dir", out, *TINY, *flags, "--iters", 3, "--eval-interval", 3,
                        "--eval-iters", 1, "--num-tokens", 0)
    train_tokens = "5,000" if layout == "ours_uint32" else "4,000"
    assert f"data: {train_tokens} train / 1,000 val tokens" in result.stdout, result.stdout
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert np.isfinite([r["val_loss"] for r in records if "val_loss" in r]).all()
    import torch
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    assert ckpt["config"]["vocab_size"] == vocab and ckpt["step"] == 3


def test_a_corrupt_shard_stops_the_script_with_one_line(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    write_shard(folder / "x_train_000000.bin", np.arange(4000) % 64, count=5000)
    result = run_script("--data", folder, "--out-dir", tmp_path / "out", *TINY, "--iters", 1, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error:") and "truncated" in result.stderr, result.stderr


def test_llmc_names_are_matched_as_words_and_bad_meta_is_a_clear_error(tmp_path):
    folder = tmp_path / "interval_data"
    folder.mkdir()
    write_shard(folder / "interval_train_000001.bin", np.arange(60) % 50)  # "val" inside a word
    write_shard(folder / "interval_val_000000.bin", np.arange(30) % 50)
    data = find_dataset(str(folder), 64)
    assert [len(a) for a in data.train] == [60] and [len(a) for a in data.val] == [30]
    broken = write_dataset(tmp_path / "broken", {"train": [range(50)]}, 64)  # no "val" split
    with pytest.raises(DataError, match="incomplete"):
        find_dataset(str(broken), 64)


def test_the_bad_id_message_names_its_position():
    dataset = TokenDataset([np.arange(10, dtype=np.uint16), np.array([1, 2, 3, 4, 205, 6], dtype=np.uint16)],
                           context_len=3, vocab_size=64)
    with pytest.raises(DataError, match=r"token id 205 \(shard 1, token 4\)"):
        dataset[7 + 1]  # window 1 of shard 1: tokens 1..4
