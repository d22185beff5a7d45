"""The GPU run's tooling, checked on the CPU: bench/smoke/<op>.py and bench/run_all.sh.

A GPU is lent to few sessions, for 15 minutes; these tests make sure the scripts that spend
those minutes work before then: each smoke script passes on the CPU kernels (--device cpu
--tiny), its harness reports a wrong value, an unwritten (NaN) output and an exception as
failures with a non-zero exit, and run_all.sh plans its stages in order and, without a GPU,
stops at stage 1 with a clear line and still writes its summary.
"""
import argparse
import os
import shutil
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "bench", "smoke")
OPS = ["bias_gelu", "causal_attention", "cross_entropy", "dropout_add"]  # run_all.sh finds them (bench/smoke/<op>.py) in name order
needs_bash = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="bash and timeout (coreutils) are needed for run_all.sh")


@pytest.mark.parametrize("op", OPS)
def test_smoke_script_passes_on_the_cpu_kernels(op):
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    result = subprocess.run([sys.executable, os.path.join(SMOKE, f"{op}.py"), "--device", "cpu", "--tiny"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    lines = out.splitlines()
    assert any(line.startswith("PASS ") for line in lines), out
    assert not any(line.startswith("FAIL") for line in lines), out
    assert f"PASSED {op} on cpu" in out


def test_harness_comparisons_fail_on_wrong_and_unwritten_values():
    sys.path.insert(0, SMOKE)
    try:
        import harness
    finally:
        sys.path.remove(SMOKE)
    ref = torch.linspace(-2, 2, 50, dtype=torch.float64)
    assert harness.compare("x", ref.float(), ref, 1e-5, 1e-6)[0]
    assert not harness.compare("x", ref + 1e-3, ref, 1e-5, 1e-6)[0]
    poisoned = ref.clone()
    poisoned[7] = float("nan")  # an element the kernel never wrote, under the NaN poison
    ok, text = harness.compare("x", poisoned, ref, 1.0, 1.0)
    assert not ok and "non-finite" in text
    assert harness.compare_norm("x", ref, ref, 1e-12)[0]
    assert not harness.compare_norm("x", poisoned, ref, 1.0)[0]
    assert not harness.compare_norm("x", ref * 1.1, ref, 1e-3)[0]
    assert not harness.compare("x", ref[:10], ref, 1.0, 1.0)[0]  # wrong shape


def test_harness_reports_failures_and_exits_nonzero(capsys):
    sys.path.insert(0, SMOKE)
    try:
        import harness
    finally:
        sys.path.remove(SMOKE)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        smoke = harness.Smoke("demo", argparse.Namespace(device="cpu", tiny=True, seed=0))
        assert torch.empty(3).isnan().all()  # the poison is on: empty tensors come back NaN
        smoke.run("good", lambda: [harness.compare("x", torch.ones(3), torch.ones(3), 0, 0)])
        smoke.run("wrong", lambda: [harness.compare("x", torch.zeros(3), torch.ones(3), 1e-3, 1e-3)])
        smoke.run("raises", lambda: [1 / 0])
        assert smoke.finish() == 1
    finally:
        torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)
    out = capsys.readouterr().out
    assert "PASS  demo good" in out and "FAIL  demo wrong" in out
    assert "FAIL  demo raises: ZeroDivisionError" in out and "FAILED demo on cpu: 1/3" in out


@needs_bash
def test_run_all_plan_puts_the_stages_in_order():
    result = subprocess.run(["bash", "bench/run_all.sh", "--dry-run"], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    stages = [line.split()[0] for line in result.stdout.splitlines()[2:] if line.strip()]
    first = {kind: next(i for i, s in enumerate(stages) if s.startswith(kind))
             for kind in ("versions", "build", "smoke_", "memcheck_", "cuda_tests", "bench_")}
    assert first["versions"] < first["build"] < first["smoke_"] < first["memcheck_"] < first["bench_"]
    assert first["cuda_tests"] < first["bench_"]
    assert {f"smoke_{op}" for op in OPS} <= set(stages)
    cheap = stages.index("bench_train")  # torch vs ext without compile before the compile variants
    assert cheap < stages.index("bench_train_compile") < stages.index("bench_train_gpt2")
    def chosen(only):  # the stages a --dry-run --only marks to run
        plan = subprocess.run(["bash", "bench/run_all.sh", "--dry-run", "--only", only], capture_output=True,
                              text=True, timeout=60, cwd=ROOT).stdout
        return [line.split()[0] for line in plan.splitlines()[2:] if line.split()[1:2] == ["yes"]]
    assert chosen("bench_train") == ["versions", "build", "bench_train"]  # not bench_train_compile
    assert chosen("smoke,cuda_tests") == ["versions", "build"] + [f"smoke_{op}" for op in OPS] + ["cuda_tests"]
    bad = subprocess.run(["bash", "bench/run_all.sh", "--only", "no_such_stage"], capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    assert bad.returncode == 2 and "no stage is called 'no_such_stage'" in bad.stderr


@needs_bash
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_run_all_without_a_gpu_stops_at_stage_one_and_still_summarises(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "RUN_ALL_LOGS": str(tmp_path / "logs"),
           "OUT": str(tmp_path / "out")}
    result = subprocess.run(["bash", "bench/run_all.sh"], capture_output=True, text=True, timeout=120,
                            cwd=ROOT, env=env)
    out = result.stdout
    assert result.returncode == 3, out + result.stderr
    assert "STOP: no CUDA GPU visible" in out
    assert "build" in out and "skipped" in out
    assert out.strip().splitlines()[-1].startswith("stage 1 stopped the run: STOP: no CUDA GPU visible")
    assert (tmp_path / "out" / "summary.md").exists() and (tmp_path / "out" / "results.tar.gz").exists()
    state = (tmp_path / "logs" / "state.tsv").read_text().splitlines()
    assert state[0].startswith("versions\tFAILED") and state[1].startswith("build\tskipped")
