#!/usr/bin/env bash
# Refresh every GPU result in one call on a machine with a GPU (e.g. the device tool's H100):
# build the extension, show which cubins were built, run the CUDA tests, run every benchmark.
#
#   bash bench/run_all.sh            # results in bench/results/, logs in bench/results/logs/
#   OUT=/some/dir bash bench/run_all.sh   # also copy results + logs there (the device tool's $OUT)
#
# Each stage runs even when an earlier one failed; the summary at the end says which failed,
# and the exit status is non-zero if any did.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
LOGS=bench/results/logs
mkdir -p "$LOGS"
declare -a SUMMARY=()
FAILED=0

stage() {  # stage NAME COMMAND...: run, log to $LOGS/NAME.log, record the outcome
  local name=$1; shift
  local started=$SECONDS
  echo "=== $name: $*"
  if "$@" > "$LOGS/$name.log" 2>&1; then
    SUMMARY+=("ok      $name ($((SECONDS - started)) s)")
  else
    SUMMARY+=("FAILED  $name ($((SECONDS - started)) s): see $LOGS/$name.log")
    FAILED=1
  fi
  tail -n 25 "$LOGS/$name.log"
}

stage environment bash -c "nvidia-smi; $PY -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())'; nvcc --version"
stage build env GPT_KERNELS_CUDA=1 "$PY" setup.py build_ext --inplace
CUOBJDUMP=$(command -v cuobjdump || true)
[ -n "$CUOBJDUMP" ] && stage cubins "$CUOBJDUMP" --list-elf gpt_kernels/_C.so
stage tests "$PY" -m pytest -q -rs tests/test_cross_entropy.py tests/test_attention.py tests/test_dropout_add.py
stage loss_bench "$PY" bench/loss_bench.py --device cuda
stage attn_bench "$PY" bench/attn_bench.py --device cuda
stage dropout_bench "$PY" bench/dropout_bench.py --device cuda
stage train_bench "$PY" bench/train_bench.py --device cuda

echo
echo "=== summary"
printf '%s\n' "${SUMMARY[@]}"
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  tar czf "$OUT/results.tar.gz" bench/results
  cp bench/results/*cuda*.md "$OUT"/ 2>/dev/null || true
fi
exit $FAILED
