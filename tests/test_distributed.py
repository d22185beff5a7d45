"""Training under torchrun on the CPU (gloo, 2 processes): the same steps as one process at
twice the batch, checkpoints that resume under torchrun and alone, and a dead rank that ends
the job instead of hanging it."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, SCRIPT, TINY, run_script, train_losses, train_records
from gpt_pretrain import GPT, GPTConfig
from support.runtime import flops_per_token

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def torchrun(*args, nproc=2, check=True, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               SCRIPT, *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"torchrun exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def common(token_file, iters):
    return ["--data", token_file, "--vocab-size", 64, *TINY, "--dropout", 0, "--iters", iters,
            "--log-interval", 1, "--eval-interval", 1000, "--num-tokens", 1]


def test_two_ranks_follow_one_process_at_twice_the_batch(token_file, tmp_path):
    args = [a for a in common(token_file, 12)]
    args[args.index("--batch-size") + 1] = 2
    result = torchrun(*args, "--out-dir", tmp_path / "ddp")
    assert "effective batch 2 x 1 grad accum x 2 ranks = 4" in result.stdout
    args[args.index("--batch-size") + 1] = 4
    run_script(*args, "--out-dir", tmp_path / "single")
    ddp, single = train_losses(tmp_path / "ddp"), train_losses(tmp_path / "single")
    assert sorted(ddp) == sorted(single) == list(range(1, 13))
    for step in single:
        assert ddp[step] == pytest.approx(single[step], abs=1e-4), f"iteration {step}"
    assert ddp[12] != ddp[1]  # the weights did move


def test_gradient_accumulation_over_ranks_matches_one_big_batch(token_file, tmp_path):
    """2 ranks x 2 micro-batches of 2 = one process at batch 8: same windows, same steps."""
    args = common(token_file, 6)
    args[args.index("--batch-size") + 1] = 2
    torchrun(*args, "--grad-accum", 2, "--out-dir", tmp_path / "accum", "--peak-flops", 1e9)
    args[args.index("--batch-size") + 1] = 8
    run_script(*args, "--out-dir", tmp_path / "single")
    accum, single = train_losses(tmp_path / "accum"), train_losses(tmp_path / "single")
    assert sorted(accum) == list(range(1, 7))
    for step in single:
        assert accum[step] == pytest.approx(single[step], abs=1e-4), f"iteration {step}"
    # the gradient norm is the whole step's (all ranks, all micro-batches), and MFU is over both ranks' peak
    accum_records, single_records = (train_records(tmp_path / run) for run in ("accum", "single"))
    config = GPTConfig(context_len=16, vocab_size=64, embed_dim=32, n_head=2, n_layer=2, ff_dim=128)
    per_token = flops_per_token(GPT(config), config)
    for step, record in accum_records.items():
        assert record["grad_norm"] == pytest.approx(single_records[step]["grad_norm"], rel=1e-3), f"iteration {step}"
        assert record["mfu"] == pytest.approx(per_token * record["tokens_per_s"] / (2 * 1e9))


def test_torchrun_checkpoint_resumes_under_torchrun_and_alone(token_file, tmp_path):
    out = tmp_path / "run"
    torchrun(*common(token_file, 4), "--out-dir", out)
    checkpoint = torch.load(out / "ckpt.pt", weights_only=True)
    assert checkpoint["step"] == 4 and checkpoint["world_size"] == 2 and len(checkpoint["rng_cpu"]) == 2
    result = torchrun(*common(token_file, 7), "--out-dir", out, "--resume")
    assert "resuming from" in result.stdout
    assert torch.load(out / "ckpt.pt", weights_only=True)["step"] == 7
    run_script(*common(token_file, 9), "--out-dir", out, "--resume")
    checkpoint = torch.load(out / "ckpt.pt", weights_only=True)
    assert checkpoint["step"] == 9 and checkpoint["world_size"] == 1
    assert sorted(train_losses(out)) == list(range(1, 10))


def test_a_dead_rank_ends_the_job(token_file, tmp_path):
    """kill -9 one worker: torchrun must stop the job with an error, not hang."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", SCRIPT,
         *map(str, common(token_file, 100000)), "--out-dir", str(out), "--dist-timeout", "60"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "metrics.jsonl").exists():
            time.sleep(0.2)
        assert (out / "metrics.jsonl").exists(), "the job never started training"
        workers = subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True).stdout.split()
        assert len(workers) == 2
        os.kill(int(workers[-1]), signal.SIGKILL)
        _, stderr = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode != 0
    assert "Signal 9" in stderr or "SIGKILL" in stderr or "failed" in stderr.lower(), stderr[-2000:]
