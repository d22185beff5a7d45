#!/usr/bin/env bash
# Refresh every GPU result in one call on a machine with a GPU (e.g. the device tool's H100):
# build the extension, show which cubins were built, run the CUDA tests, run every benchmark.
#
#   bash bench/run_all.sh            # results in bench/results/, logs in bench/results/logs/
#   OUT=/some/dir bash bench/run_all.sh   # also copy results + logs there (the device tool's $OUT)
#
# The device tool allows 10 minutes per command and 15 minutes of device time per session, so
# the stages run in order of importance under one deadline (RUN_ALL_BUDGET_S, default 540 s):
# each gets at most its own cap and what is left of the budget, and a stage that would start
# with under 20 s left is skipped, saying so. The heavy tails (GPT-2 small in train_bench, the
# large loss_bench shapes) come last. Each stage runs even when an earlier one failed; the
# summary at the end says which failed or were cut, and the exit status is non-zero if any did.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export PYTHONUNBUFFERED=1
BUDGET=${RUN_ALL_BUDGET_S:-540}
DEADLINE=$((SECONDS + BUDGET))
LOGS=bench/results/logs
mkdir -p "$LOGS"
declare -a SUMMARY=()
FAILED=0

stage() {  # stage NAME CAP_S COMMAND...: run under a time limit, log to $LOGS/NAME.log, record the outcome
  local name=$1 cap=$2; shift 2
  local left=$((DEADLINE - SECONDS))
  if [ "$left" -lt 20 ]; then
    SUMMARY+=("skipped $name: the ${BUDGET} s budget is spent")
    FAILED=1
    return
  fi
  local limit=$((cap < left ? cap : left))
  local started=$SECONDS
  echo "=== $name (at most ${limit} s): $*"
  timeout --kill-after=10 "$limit" "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  if [ "$rc" -eq 0 ]; then
    SUMMARY+=("ok      $name ($((SECONDS - started)) s)")
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    SUMMARY+=("CUT     $name after ${limit} s: see $LOGS/$name.log")
    FAILED=1
  else
    SUMMARY+=("FAILED  $name ($((SECONDS - started)) s, exit $rc): see $LOGS/$name.log")
    FAILED=1
  fi
  tail -n 25 "$LOGS/$name.log"
}

stage environment 30 bash -c "nvidia-smi; $PY -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())'; nvcc --version"
stage build 240 env GPT_KERNELS_CUDA=1 "$PY" setup.py build_ext --inplace
CUOBJDUMP=$(command -v cuobjdump || true)
[ -n "$CUOBJDUMP" ] && stage cubins 20 "$CUOBJDUMP" --list-elf gpt_kernels/_C.so
stage tests 180 "$PY" -m pytest -q -rs --maxfail=25 tests/test_cross_entropy.py tests/test_attention.py tests/test_dropout_add.py tests/test_bias_gelu.py tests/test_ext_model.py
stage attn_bench 90 "$PY" bench/attn_bench.py --device cuda
stage dropout_bench 40 "$PY" bench/dropout_bench.py --device cuda
stage gelu_bench 40 "$PY" bench/gelu_bench.py --device cuda
stage loss_bench_quick 60 "$PY" bench/loss_bench.py --device cuda --quick
stage train_bench 150 "$PY" bench/train_bench.py --device cuda --shapes default
stage train_bench_gpt2 180 "$PY" bench/train_bench.py --device cuda --shapes gpt2-small
stage loss_bench 180 "$PY" bench/loss_bench.py --device cuda

echo
echo "=== summary"
printf '%s\n' "${SUMMARY[@]}"
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  tar czf "$OUT/results.tar.gz" bench/results  # the device tool returns at most 8 files
  cat bench/results/*cuda*.md > "$OUT/gpu_results.md" 2>/dev/null || true
fi
exit $FAILED
