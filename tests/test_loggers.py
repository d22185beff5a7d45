"""--logger tensorboard and --logger wandb: the same metrics as metrics.jsonl and the config,
read back from the files they write into --out-dir (W&B offline: no account, no network)."""
import glob
import json
import math
import struct

import pytest

from conftest import TINY, run_script
from test_guards import run_patched


def common(token_file, out, *extra):
    return ["--data", token_file, "--vocab-size", 64, *TINY, "--iters", 6, "--log-interval", 2,
            "--eval-interval", 3, "--num-tokens", 2, "--out-dir", out, *extra]


def jsonl_metrics(out):
    """{name: {iter: value}} from metrics.jsonl."""
    metrics = {}
    with open(out / "metrics.jsonl") as f:
        for record in map(json.loads, f):
            for name, value in record.items():
                if name != "iter" and isinstance(value, (int, float)):
                    metrics.setdefault(name, {})[record["iter"]] = value
    return metrics


def tensorboard_metrics(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    scalars = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
    texts = [t.tensor_proto.string_val[0].decode() for tag in events.Tags()["tensors"] for t in events.Tensors(tag)]
    return scalars, texts


def wandb_records(run_file):
    """The protobuf records of an offline W&B run (run-*.wandb: a LevelDB-style log of 32 KiB
    blocks after a 7-byte header, each chunk with a 7-byte header of crc, length, type)."""
    from wandb.proto import wandb_internal_pb2
    with open(run_file, "rb") as f:
        data = f.read()
    assert data[:4] == b":W&B"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if kind == 0:  # zero padding
            pos += left - 7
            continue
        pending += data[pos:pos + length]
        pos += length
        if kind in (1, 4):  # FULL, or LAST of FIRST/MIDDLE.../LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_metrics(run_file):
    config, history = {}, {}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            items = {(item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in record.history.item}
            step = items.pop("_step")
            for name, value in items.items():
                if not name.startswith("_"):
                    history.setdefault(name, {})[step] = value
    return config, history


def assert_same(logged, expected):
    assert set(logged) == set(expected)
    for name in expected:
        assert set(logged[name]) == set(expected[name]), name
        for step, value in expected[name].items():
            assert logged[name][step] == pytest.approx(value, rel=1e-6) or \
                (math.isnan(value) and math.isnan(logged[name][step])), (name, step)


def test_tensorboard_and_wandb_log_the_metrics_and_the_config(token_file, tmp_path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    out = tmp_path / "run"
    run_script(*common(token_file, out, "--logger", "tensorboard", "--logger", "wandb"),
               env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    expected = jsonl_metrics(out)
    assert {"train_loss", "grad_norm", "lr", "tokens_per_s", "val_loss", "eval_train_loss"} <= set(expected)
    assert sorted(expected["grad_norm"]) == [2, 4, 6] and all(v > 0 for v in expected["grad_norm"].values())

    scalars, texts = tensorboard_metrics(out / "tensorboard")
    assert_same(scalars, expected)
    assert any("embed_dim = 32" in t and "learning_rate = " in t for t in texts), texts

    run_files = glob.glob(str(out / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(run_files) == 1
    config, history = wandb_metrics(run_files[0])
    assert config["embed_dim"] == 32 and config["n_layer"] == 2 and config["batch_size"] == 4
    assert_same(history, expected)


def test_a_logger_that_is_not_installed_is_a_clear_error(token_file, tmp_path):
    result = run_patched("import sys\nsys.modules['wandb'] = None  # as if not installed\n",
                         common(token_file, tmp_path / "run", "--logger", "wandb"))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error:") and "pip install wandb" in result.stderr
