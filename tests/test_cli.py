"""gpt_pretrain.py as a user runs it: training, metrics, checkpoints, resume, sampling, bad input."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import ROOT, SCRIPT, TINY, read_metrics, run_script, text_dataset, train_losses
from gpt_pretrain import UsageError, load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A dataset folder prepared from a few hundred lines of Python-like text."""
    return text_dataset(tmp_path_factory, 6, 60, "+")


def test_cli_trains_and_writes_everything(dataset, tmp_path):
    out = tmp_path / "run"
    result = run_script("--data", dataset, "--out-dir", out, *TINY, "--iters", 8, "--log-interval", 2,
                        "--eval-interval", 4, "--num-tokens", 20)
    records = read_metrics(out)
    assert [r["iter"] for r in records if "train_loss" in r] == [2, 4, 6, 8]
    evals = [r for r in records if "val_loss" in r]
    assert [r["iter"] for r in evals] == [4, 8]
    assert all(np.isfinite(r["val_loss"]) and np.isfinite(r["eval_train_loss"]) for r in evals)
    assert all(r["tokens_per_s"] > 0 and r["lr"] > 0 for r in records if "train_loss" in r)

    checkpoint = torch.load(out / "ckpt.pt", weights_only=True)
    assert checkpoint["step"] == 8
    assert checkpoint["config"]["vocab_size"] == 300  # taken from the dataset's meta.json
    assert checkpoint["tokenizer"] == str(dataset / "tokenizer.json")
    assert not (out / "ckpt.pt.tmp").exists()
    assert (out / "loss_curve.png").stat().st_size > 1000
    assert "sample (temperature" in result.stdout

    sampled = run_script("--sample", "--out-dir", out, "--prompt", "def f", "--num-tokens", 10)
    assert sampled.stdout.startswith("def f")


def test_cli_raw_bin_samples_token_ids(token_file, tmp_path):
    out = tmp_path / "run"
    result = run_script("--data", token_file, "--vocab-size", 64, "--out-dir", out, *TINY,
                        "--iters", 3, "--num-tokens", 5)
    last_line = result.stdout.strip().splitlines()[-1]
    assert all(t.isdigit() and int(t) < 64 for t in last_line.split())  # no tokenizer: ids


def test_interrupt_and_resume_reproduces_the_uninterrupted_run(token_file, tmp_path):
    common = ["--data", token_file, "--vocab-size", 64, *TINY, "--dropout", 0.1, "--iters", 300,
              "--log-interval", 1, "--eval-interval", 1000, "--ckpt-interval", 1000, "--num-tokens", 1]
    run_script(*common, "--out-dir", tmp_path / "whole")

    # Ctrl-C part way: the run must finish its step, checkpoint and exit 130 without a traceback.
    out = tmp_path / "parts"
    process = subprocess.Popen([sys.executable, SCRIPT, *map(str, common), "--out-dir", str(out)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        metrics = out / "metrics.jsonl"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 20:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "--resume" in stdout
    stopped_at = torch.load(out / "ckpt.pt", weights_only=True)["step"]
    assert 20 <= stopped_at < 300, "the interrupt came too late to test anything"

    run_script(*common, "--out-dir", out, "--resume")
    whole, parts = train_losses(tmp_path / "whole"), train_losses(out)
    assert sorted(parts) == list(range(1, 301))
    for step in whole:
        assert parts[step] == pytest.approx(whole[step], abs=1e-6), f"losses differ at iteration {step}"


def test_checkpoint_survives_a_kill_during_the_write(tmp_path):
    """kill -9 in the middle of writing the next checkpoint leaves the previous one intact."""
    path = str(tmp_path / "ckpt.pt")
    save_checkpoint(path, {"step": 1, "weights": torch.arange(10.0)})
    code = f"""
import os, signal, torch, gpt_pretrain
def half_save(state, f):
    f.write(b"PK" + b"x" * 1000)
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)  # dies mid-write
torch.save = half_save
gpt_pretrain.save_checkpoint({path!r}, {{"step": 2, "weights": torch.zeros(10)}})
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True)
    assert result.returncode == -signal.SIGKILL
    restored = load_checkpoint(path)
    assert restored["step"] == 1 and torch.equal(restored["weights"], torch.arange(10.0))


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoints_load_without_running_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": Payload()}, path)
    with pytest.raises(UsageError, match="cannot read checkpoint"):
        load_checkpoint(str(path))


def write_tokens(path, ids):
    np.asarray(ids, dtype=np.uint16).tofile(path)
    return path


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("empty", "is empty"),
    ("odd", "odd size"),
    ("large_id", "holds token id 999"),
    ("short", "fewer than context_len + 1"),
    ("heads", "not divisible by n_head"),
    ("ext_head_size", "takes head sizes 32, 64 and 128"),
    ("no_checkpoint", "no checkpoint"),
    ("unwritable", "cannot write to --out-dir"),
    ("unknown_device", "use cpu, cuda, cuda:N or mps"),
    ("mps_or_ext_on_mps", "MPS"),
])
def test_bad_input_gives_a_clear_error(tmp_path, case, message):
    data = tmp_path / "tokens.bin"
    write_tokens(data, np.arange(4000) % 64)
    out = tmp_path / "out"
    extra = []
    if case == "missing":
        data = tmp_path / "nothing.bin"
    elif case == "empty":
        data.write_bytes(b"")
    elif case == "odd":
        data.write_bytes(b"\x01\x00\x02")
    elif case == "large_id":
        write_tokens(data, [1, 2, 999, 3] * 1000)
    elif case == "short":
        write_tokens(data, range(10))
    elif case == "heads":
        extra = ["--embed-dim", 33, "--n-head", 2]
    elif case == "ext_head_size":
        extra = ["--kernels", "ext", "--embed-dim", 48, "--n-head", 4]
    elif case == "no_checkpoint":
        extra = ["--resume"]
    elif case == "unknown_device":
        extra = ["--device", "tpu"]
    elif case == "mps_or_ext_on_mps":  # no MPS here: that error; on a Mac: ext refused on MPS
        extra = ["--device", "mps", "--kernels", "ext", "--embed-dim", 64]
    elif case == "unwritable":
        (tmp_path / "a_file").write_text("not a folder")
        out = tmp_path / "a_file" / "out"
    result = run_script("--data", data, "--vocab-size", 64, "--out-dir", out, *TINY, "--iters", 2,
                        *extra, check=False)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error:") and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2


def test_resume_with_another_model_shape_is_refused(token_file, tmp_path):
    out = tmp_path / "run"
    run_script("--data", token_file, "--vocab-size", 64, "--out-dir", out, *TINY, "--iters", 2,
               "--num-tokens", 1)
    before = (out / "ckpt.pt").read_bytes()
    result = run_script("--data", token_file, "--vocab-size", 64, "--out-dir", out, *TINY,
                        "--iters", 4, "--resume", "--embed-dim", 64, check=False)
    assert result.returncode == 2 and "another model shape" in result.stderr and "embed_dim=64" in result.stderr
    assert "Traceback" not in result.stderr
    assert (out / "ckpt.pt").read_bytes() == before  # nothing lost


def test_preset_layers_between_defaults_and_flags():
    from gpt_pretrain import PRESETS, given_flags, parse_args, resolve_config
    args = parse_args(["--preset", "cpu", "--n-layer", "2"])
    config, train = resolve_config(given_flags(args), args.preset)
    assert config.context_len == PRESETS["cpu"]["context_len"] and config.embed_dim == PRESETS["cpu"]["embed_dim"]
    assert config.n_layer == 2  # an explicit flag beats the preset
    assert train.max_iters == PRESETS["cpu"]["max_iters"] and train.learning_rate == PRESETS["cpu"]["learning_rate"]
    assert config.kernels == "torch" and config.vocab_size == 1000  # unset by the preset: the defaults
    assert train.weight_decay == 0.1 and train.seed == 1337
    reference, reference_train = resolve_config(given_flags(parse_args([])))
    assert (reference_train.batch_size, reference_train.learning_rate, reference_train.max_iters) == (32, 3e-4, 20000)
    assert (reference.context_len, reference.embed_dim, reference.n_head, reference.n_layer,
            reference.ff_dim, reference.dropout) == (256, 384, 6, 6, 1536, 0.1)
