"""Long runs you can trust: a diverging run stops cleanly and keeps its last good checkpoint, a
full disk (or any write error) ends the run in one line with nothing lost, loss spikes are
skipped on request, and a model without a distribution is reported, not sampled."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import ROOT, SCRIPT, TINY, read_metrics, run_script
from gpt_pretrain import EXIT_DIVERGED, EXIT_WRITE_FAILED, GPT, GPTConfig, all_finite, load_checkpoint
from support.guards import SpikeDetector


def common(token_file, iters, *extra):
    return ["--data", token_file, "--vocab-size", 64, *TINY, "--iters", iters, "--log-interval", 1,
            "--eval-interval", 1000, "--num-tokens", 5, *extra]


def run_patched(patch, args, env=None, timeout=300):
    """gpt_pretrain.py as `python gpt_pretrain.py ARGS`, after running the code `patch` (which
    injects a fault) in the same process."""
    code = textwrap.dedent(patch) + f"\nimport runpy, sys\nsys.argv = {[SCRIPT, *map(str, args)]!r}\n" \
                                    f"runpy.run_path({SCRIPT!r}, run_name='__main__')\n"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "2", **(env or {})})


def assert_one_clear_line(result, status, *words):
    assert result.returncode == status, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def assert_loadable(path, step):
    checkpoint = load_checkpoint(str(path))
    assert checkpoint["step"] == step
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values())
    assert not os.path.exists(str(path) + ".tmp")


# ----------------------------------------------------------------------------- non-finite steps

def test_a_diverging_run_stops_and_keeps_the_last_finite_checkpoint(token_file, tmp_path):
    out = tmp_path / "run"
    result = run_script(*common(token_file, 200, "--learning-rate", 1e4, "--grad-clip", 0, "--ckpt-interval", 1,
                                "--max-nonfinite", 2), "--out-dir", out, check=False)
    line = assert_one_clear_line(result, EXIT_DIVERGED, "training diverged", "not finite", str(out / "ckpt.pt"))
    skipped = [r for r in read_metrics(out) if r.get("skipped") == "non-finite"]
    assert len(skipped) == 2 and skipped[1]["iter"] == skipped[0]["iter"] + 1
    first_bad = skipped[0]["iter"]
    assert f"iterations {first_bad} to {first_bad + 1}" in line
    # the checkpoint holds the weights before the first non-finite step, and says so
    assert_loadable(out / "ckpt.pt", first_bad - 1)
    assert f"(iteration {first_bad - 1})" in line
    assert all(r["skipped_steps"] >= 1 for r in read_metrics(out) if "train_loss" in r and r["iter"] >= first_bad)


def test_non_finite_weights_are_never_checkpointed():
    model = GPT(GPTConfig(context_len=8, vocab_size=16, embed_dim=8, n_head=2, n_layer=1, ff_dim=16))
    optimizer = torch.optim.AdamW(model.parameters())
    assert all_finite(model, optimizer)
    with torch.no_grad():
        model.blocks[0].mlp.fc.weight[0, 0] = float("inf")
    assert not all_finite(model, optimizer)


def test_a_model_without_a_distribution_is_reported_not_sampled(token_file, tmp_path):
    out = tmp_path / "run"
    run_script(*common(token_file, 2), "--out-dir", out)
    checkpoint = torch.load(out / "ckpt.pt", weights_only=True)
    checkpoint["model"]["ln_f.weight"].fill_(float("nan"))
    torch.save(checkpoint, out / "ckpt.pt")
    result = run_script("--sample", "--out-dir", out, "--num-tokens", 5, check=False)
    assert_one_clear_line(result, EXIT_DIVERGED, "cannot sample", "not finite")


# ----------------------------------------------------------------------------- write errors

# Fails the second checkpoint after writing part of it, as a disk filling up does.
FAIL_SECOND_CHECKPOINT = """
import errno, torch
real_save, calls = torch.save, []
def save(state, f):
    calls.append(1)
    if len(calls) == 2:
        f.write(b"PK" + b"x" * 4096)
        raise OSError(errno.ENOSPC, "No space left on device")
    real_save(state, f)
torch.save = save
"""


def test_a_failed_checkpoint_write_keeps_the_previous_one(token_file, tmp_path):
    out = tmp_path / "run"
    result = run_patched(FAIL_SECOND_CHECKPOINT, common(token_file, 6, "--ckpt-interval", 3) + ["--out-dir", out])
    assert_one_clear_line(result, EXIT_WRITE_FAILED, "cannot write the checkpoint", "No space left on device",
                          "last good checkpoint", "(iteration 3)")
    assert_loadable(out / "ckpt.pt", 3)
    assert sorted(os.listdir(out)) == ["ckpt.pt", "metrics.jsonl"]  # no temp file


# From the FROM_OPEN-th time support/files.py opens a file whose name ends with SUFFIX for
# writing, each such file takes FAIL_AFTER bytes and then fails as a full disk does.
FAIL_WRITES_TO = """
import builtins, errno, io
import support.files
SUFFIX, FROM_OPEN, FAIL_AFTER = {suffix!r}, {from_open}, {fail_after}
opened = []
class Full(io.RawIOBase):
    def __init__(self, f):
        self.f, self.left = f, FAIL_AFTER
    def writable(self):
        return True
    def write(self, data):
        if self.left <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = min(len(data), self.left)
        self.left -= n
        return self.f.write(bytes(data[:n]))
    def fileno(self):
        return self.f.fileno()
    def close(self):
        self.f.close()
        super().close()
def open_(path, mode="r", *args, **kwargs):
    if not str(path).endswith(SUFFIX) or "r" in mode:
        return builtins.open(path, mode, *args, **kwargs)
    opened.append(path)
    if len(opened) < FROM_OPEN:
        return builtins.open(path, mode, *args, **kwargs)
    raw = Full(builtins.open(path, mode.replace("b", "") + "b", buffering=0))
    return raw if "b" in mode else io.TextIOWrapper(io.BufferedWriter(raw), write_through=True)
support.files.open = open_
"""


def test_a_failed_metrics_write_leaves_no_half_line(token_file, tmp_path):
    out = tmp_path / "run"
    patch = FAIL_WRITES_TO.format(suffix="metrics.jsonl", from_open=5, fail_after=10)  # the 5th record
    result = run_patched(patch, common(token_file, 10, "--ckpt-interval", 2) + ["--out-dir", out])
    assert_one_clear_line(result, EXIT_WRITE_FAILED, "cannot write metrics", "metrics.jsonl",
                          "No space left on device", "(iteration 4)")
    assert [r["iter"] for r in read_metrics(out)] == [1, 2, 3, 4]  # whole lines only
    assert_loadable(out / "ckpt.pt", 4)


def test_a_failed_plot_write_leaves_no_temp_file(token_file, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    result = run_patched(FAIL_WRITES_TO.format(suffix="loss_curve.png.tmp", from_open=1, fail_after=100),
                         common(token_file, 3) + ["--out-dir", out])
    assert_one_clear_line(result, EXIT_WRITE_FAILED, "cannot write the loss plot", "No space left on device",
                          "(iteration 3)")
    assert not (out / "loss_curve.png").exists() and not (out / "loss_curve.png.tmp").exists()
    assert_loadable(out / "ckpt.pt", 3)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 600 KiB tmpfs: room for one checkpoint of the TINY model (370 KB), not for two."""
    mount_point = tmp_path / "small_disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount_point)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root?); the injected write errors test the same")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], capture_output=True)


def test_a_full_disk_ends_the_run_cleanly(token_file, small_tmpfs):
    out = small_tmpfs / "run"
    result = run_script(*common(token_file, 6, "--ckpt-interval", 3), "--out-dir", out, check=False)
    assert_one_clear_line(result, EXIT_WRITE_FAILED, "cannot write the checkpoint", "No space left on device",
                          "(iteration 3)")
    assert_loadable(out / "ckpt.pt", 3)


# ----------------------------------------------------------------------------- loss spikes

def test_spike_detector_flags_only_outliers():
    detector = SpikeDetector(threshold=4, window=20)
    losses = [3.0 + 0.01 * ((i * 7) % 5) for i in range(20)]
    assert not any(detector.is_spike(x) for x in losses)  # no verdict until the window is full
    assert not detector.is_spike(3.03)
    assert detector.is_spike(5.0)
    assert not detector.is_spike(2.0)  # a drop is no spike
    detector2 = SpikeDetector(threshold=4, window=20)
    detector2.load_state_dict(detector.state_dict())
    assert detector2.zscore(3.02) == pytest.approx(detector.zscore(3.02))


# A 16-step window, and the loss of step SPIKE_AT multiplied by 30 (on rank SPIKE_RANK only);
# every rank leaves the weights it checkpoints, to compare. (The script runs as __main__, so
# the faults go in through torch, which it shares with this code.)
SPIKE_PATCH = """
import os, torch
import torch.nn.functional as F
import support.guards
support.guards.SpikeDetector.__init__.__defaults__ = (16,)
SPIKE_AT, SPIKE_RANK, OUT = 30, {rank}, {out!r}
real_cross_entropy, calls = F.cross_entropy, []
def cross_entropy(logits, targets):
    calls.append(1)
    value = real_cross_entropy(logits, targets)
    return value * 30 if len(calls) == SPIKE_AT and int(os.environ.get("RANK", 0)) == SPIKE_RANK else value
F.cross_entropy = cross_entropy
real_state_dict = torch.nn.Module.state_dict
def state_dict(self, *args, **kwargs):
    state = real_state_dict(self, *args, **kwargs)
    if type(self).__name__ == "GPT":
        torch.save(state, os.path.join(OUT, f"weights_rank{{os.environ.get('RANK', 0)}}.pt"))
    return state
torch.nn.Module.state_dict = state_dict
"""


def test_skip_spikes_skips_the_spike(token_file, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    args = common(token_file, 40, "--skip-spikes", 6, "--dropout", 0) + ["--out-dir", out]
    result = run_patched(SPIKE_PATCH.format(rank=0, out=str(out)), args)
    assert result.returncode == 0, result.stderr[-3000:]
    skipped = [r for r in read_metrics(out) if "skipped" in r]
    assert [(r["iter"], r["skipped"]) for r in skipped] == [(30, "spike")]
    assert skipped[0]["loss"] > 30
    assert [r["skipped_steps"] for r in read_metrics(out) if r.get("iter") == 40 and "train_loss" in r] == [1]


def test_skip_spikes_decides_alike_on_every_rank(token_file, tmp_path):
    """The spike is on rank 1 only: rank 0 must skip the step too, or the weights part ways."""
    out = tmp_path / "run"
    out.mkdir()
    wrapper = tmp_path / "wrapper.py"
    args = common(token_file, 40, "--skip-spikes", 6, "--dropout", 0, "--batch-size", 2) + ["--out-dir", out]
    wrapper.write_text(f"import sys\nsys.path.insert(0, {ROOT!r})\n" + SPIKE_PATCH.format(rank=1, out=str(out))
                       + f"\nimport runpy\nsys.argv = [{SCRIPT!r}] + sys.argv[1:]\n"
                       f"runpy.run_path({SCRIPT!r}, run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(wrapper), *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert [(r["iter"], r["skipped"]) for r in read_metrics(out) if "skipped" in r] == [(30, "spike")]
    rank0, rank1 = (torch.load(out / f"weights_rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)


# ----------------------------------------------------------------------------- grad norm and MFU

def test_peak_flops_table_knows_the_common_gpus():
    from support.runtime import gpu_peak_flops
    assert gpu_peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert gpu_peak_flops("NVIDIA H100 PCIe") == 756e12
    assert gpu_peak_flops("NVIDIA H200") == 989e12
    assert gpu_peak_flops("NVIDIA A100-SXM4-80GB") == gpu_peak_flops("NVIDIA A100-PCIE-40GB") == 312e12
    assert gpu_peak_flops("NVIDIA A10") == 125e12
    assert gpu_peak_flops("NVIDIA L4") == 121e12 and gpu_peak_flops("NVIDIA L40S") == 362e12
    assert gpu_peak_flops("NVIDIA A10G") is None and gpu_peak_flops("NVIDIA GeForce RTX 4090") is None


def test_grad_norm_and_mfu_in_the_metrics(token_file, tmp_path):
    """--peak-flops gives MFU on any device: model FLOPs per token x tokens/s over the peak."""
    from support.runtime import flops_per_token
    out = tmp_path / "run"
    run_script(*common(token_file, 4, "--grad-accum", 2, "--peak-flops", 1e9), "--out-dir", out)
    config = GPTConfig(context_len=16, vocab_size=64, embed_dim=32, n_head=2, n_layer=2, ff_dim=128)
    per_token = flops_per_token(GPT(config), config)
    logged = [r for r in read_metrics(out) if "train_loss" in r]
    assert [r["iter"] for r in logged] == [1, 2, 3, 4]
    for r in logged:
        assert r["grad_norm"] > 0 and r["mfu"] == pytest.approx(per_token * r["tokens_per_s"] / 1e9)
