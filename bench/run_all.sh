#!/usr/bin/env bash
# The GPU verdict in one call of at most 6 minutes (the device tool's lease: 15 minutes of device
# time a session, machine start included, 10 minutes a command), in order of importance:
#   1 versions   python, torch, nvcc, GPU, compute-sanitizer, ncu; stop at once, saying why and
#                what to do, if the extension cannot be built here (bench/gpu_env.py)
#   2 build      for this GPU's architecture only, with all cores
#   3 smoke_*    one script per op, each in its own process with CUDA_LAUNCH_BLOCKING=1, all four
#                at once (a fault in one op hides nothing of the others); then memcheck_* and
#                racecheck_* (compute-sanitizer on each at its --tiny shapes, where the tool
#                works: "n/a" where it does not), in parallel with
#   4 cuda_tests the tests marked cuda, only: python -m pytest -m cuda -q -rs -x --maxfail=25 on
#                tests/test_<op>.py for each op first, then the other tests/test_*.py
#   5 bench_*    the training step torch vs ext and bench_<op>, each op's benchmark at its default
#                shape, all without torch.compile; then the compile variants (bench_<op>_compile);
#                then the large shapes (T = 2048 attention, GPT-2 small, the (8192, 50257) loss)
# The ops are found by convention: bench/smoke/<op>.py, tests/test_<op>.py, and the bench script
# that declares OP = "<op>" (bench/<op>_bench.py; loss_bench.py for cross_entropy).
#
#   bash bench/run_all.sh                 # everything, under RUN_ALL_BUDGET_S (default 360 s)
#   bash bench/run_all.sh --dry-run       # the plan: stages, expected seconds, caps; runs nothing
#   bash bench/run_all.sh --rerun-failed  # only what did not pass last time (read from the state file)
#   bash bench/run_all.sh --only smoke_causal_attention,cuda_tests   # these (prefixes work: smoke, bench)
#   OUT=$OUT bash bench/run_all.sh        # also put summary.md and results.tar.gz in $OUT
#
# versions and build run before any selection (a fresh machine keeps nothing), whenever 10 s of
# the budget are left. Every other stage gets at most its cap and what is left of the budget; one
# whose expected time no longer fits is skipped, saying so (a later, shorter one may still run).
# RUN_ALL_DEVICE=cpu runs the same stages on the CPU kernels, to check this script without a GPU.
# Logs: bench/results/logs/<stage>.log (RUN_ALL_LOGS to put them elsewhere). summary.md there
# combines the versions, the table, the tail of each log that did not pass and the GPU tables
# written by this run; state.tsv keeps each stage's latest outcome for --rerun-failed (on a fresh
# machine it is there only if results.tar.gz was unpacked into the repo before the call, since the
# tree travels; else name the stages with --only). The table comes last in the output: the device
# tool returns only its tail. Exit status: 0 when the build passed and nothing FAILED or was CUT,
# 1 otherwise, 3 when stage 1 stopped the run.
# shellcheck disable=SC2016,SC2317  # stage commands are single-quoted on purpose (expanded when
# they run, after stage 1), and the stage_* functions are called from them, by name
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

usage() { sed -n '2,/^# shellcheck/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

MODE=all  # all, rerun (--rerun-failed) or only (--only)
DRY=0
ONLY=""
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DRY=1 ;;
    --rerun-failed) MODE=rerun ;;
    --only) ONLY=${2:?--only needs a comma-separated list of stages}; MODE=only; shift ;;
    --only=*) ONLY=${1#--only=}; MODE=only ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run_all.sh: unknown argument '$1' (--help)" >&2; exit 2 ;;
  esac
  shift
done

PY=${PYTHON:-python3}
# the python's own bin folder first: its ninja, pytest and compilers' wrappers (a venv not activated)
PY_BIN=$(dirname "$(command -v "$PY" 2>/dev/null || echo "$PY")")
export PATH="$PY_BIN:$PATH" PYTHONUNBUFFERED=1 PY
BUDGET=${RUN_ALL_BUDGET_S:-360}
# RUN_ALL_DEVICE=cpu: a self-check of this script on a machine without a GPU: the same stages on
# the CPU kernels (a CPU-only build, smoke --device cpu, benches --device cpu writing their tables
# under the logs folder, never over bench/results); says nothing about CUDA.
DEVICE=${RUN_ALL_DEVICE:-cuda}
case $DEVICE in cuda|cpu) ;; *) echo "run_all.sh: RUN_ALL_DEVICE must be cuda or cpu" >&2; exit 2 ;; esac
RESERVE=10  # kept at the end for the summary and the tarball
LOGS=${RUN_ALL_LOGS:-bench/results/logs}
STATE=$LOGS/state.tsv
# The ops, by convention: every bench/smoke/<op>.py (harness.py is their plumbing). Each op's
# tests are tests/test_<op>.py and its benchmark is the bench/*_bench.py that declares OP = "<op>"
# (bench/<op>_bench.py; cross_entropy's is loss_bench.py, by its users' name).
OPS=$(for f in bench/smoke/*.py; do b=$(basename "$f" .py); [ "$b" = harness ] || echo "$b"; done | paste -sd' ' -)
test_of() { if [ -f "tests/test_$1.py" ]; then echo "tests/test_$1.py"; fi; }  # test_of OP: the op's test file
bench_of() { grep -l "^OP = \"$1\"" bench/*_bench.py 2>/dev/null | head -n1; }
OP_TESTS=""
for op in $OPS; do
  t=$(test_of "$op")
  if [ -n "$t" ]; then OP_TESTS="$OP_TESTS $t"; else echo "run_all.sh: no tests/test_$op.py for op $op" >&2; fi
done
# the op tests first (with -x they fail first), then every other test file
OTHER_TESTS=$(for f in tests/test_*.py; do case " $OP_TESTS " in *" $f "*) ;; *) printf ' %s' "$f" ;; esac; done)
export OP_TESTS OTHER_TESTS
NPROC=$(nproc 2>/dev/null || echo 4)

# --- the plan: name, expected seconds on an H200, cap, parallel group ("" = alone), command ---
# The commands are run by bash -c after stage 1, so $GPU_ARCH, $SANITIZER... are stage 1's findings.
NAMES=(); EXPECT=(); CAP=(); GROUP=(); CMD=()
add() { NAMES+=("$1"); EXPECT+=("$2"); CAP+=("$3"); GROUP+=("$4"); CMD+=("$5"); }

add versions 15 90 "" '"$PY" bench/gpu_env.py --device "$DEVICE" --env-out "$LOGS/gpu_env.sh"'
add build 90 240 "" 'stage_build'
for op in $OPS; do
  add "smoke_$op" 20 60 smoke "CUDA_LAUNCH_BLOCKING=1 \"\$PY\" bench/smoke/$op.py --device \$DEVICE"
done
for op in $OPS; do
  add "memcheck_$op" 45 120 checks "stage_sanitizer memcheck $op"
  add "racecheck_$op" 45 120 checks "stage_sanitizer racecheck $op"
done
add cuda_tests 120 180 checks 'stage_cuda_tests'
# the training step torch vs ext and every op's benchmark at its default shape, without
# torch.compile (--quick --no-compile); then the compile variants; then the large shapes
add bench_train 35 90 "" '"$PY" bench/train_bench.py --device $DEVICE --shapes default --variants torch ext --tag eager'
for op in $OPS; do
  b=$(bench_of "$op")
  [ -n "$b" ] && add "bench_$op" 20 60 "" "\"\$PY\" $b --device \$DEVICE --quick --no-compile --tag eager"
done
add bench_train_compile 90 150 "" '"$PY" bench/train_bench.py --device $DEVICE --shapes default'
for op in $OPS; do
  b=$(bench_of "$op")
  [ -n "$b" ] && grep -q "torch.compile" "$b" && add "bench_${op}_compile" 60 120 "" "\"\$PY\" $b --device \$DEVICE --quick"
done
add bench_causal_attention_large 60 120 "" '"$PY" bench/causal_attention_bench.py --device $DEVICE'
add bench_train_gpt2 150 240 "" '"$PY" bench/train_bench.py --device $DEVICE --shapes gpt2-small'
add bench_cross_entropy_large 90 150 "" '"$PY" bench/loss_bench.py --device $DEVICE --shapes 8192x50257 --tag 8192x50257'

# --- what the stages run (exported: the stage commands run in a child bash under timeout) ---
stage_build() {
  if [ "$DEVICE" = cpu ]; then  # the self-check: the CPU kernels only
    echo "MAX_JOBS=$NPROC GPT_KERNELS_CUDA=0"
    GPT_KERNELS_CUDA=0 MAX_JOBS=$NPROC "$PY" setup.py build_ext --inplace || return
    "$PY" -c "import gpt_kernels; print('gpt_kernels imports')"
    return
  fi
  echo "TORCH_CUDA_ARCH_LIST=$GPU_ARCH MAX_JOBS=$NPROC GPT_KERNELS_CUDA=1"
  GPT_KERNELS_CUDA=1 TORCH_CUDA_ARCH_LIST=$GPU_ARCH MAX_JOBS=$NPROC "$PY" setup.py build_ext --inplace || return
  "$PY" -c "import gpt_kernels, sys; ok = gpt_kernels.has_cuda_kernels(); print('gpt_kernels imports; CUDA kernels:', ok); sys.exit(0 if ok else 1)" || return
  if [ -n "$CUOBJDUMP" ]; then  # which machine code is in the library (sm_90 expected on an H200)
    "$CUOBJDUMP" --list-elf gpt_kernels/_C*.so | sed 's/.*\.\(sm_[0-9a-z]*\)\..*/cubin \1/' | sort | uniq -c
  fi
}
stage_sanitizer() {  # stage_sanitizer TOOL OP: the smoke script at its --tiny cases under the tool
  # No caching allocator, so that every tensor is its own allocation and an access past its end
  # lands outside any (memcheck cannot see an overrun inside one of the allocator's blocks).
  # shellcheck disable=SC2086  # SANITIZER_OPTS is a list of options
  CUDA_LAUNCH_BLOCKING=1 PYTORCH_NO_CUDA_MEMORY_CACHING=1 OMP_NUM_THREADS=2 \
    "$SANITIZER" --tool "$1" $SANITIZER_OPTS --error-exitcode 99 "$PY" "bench/smoke/$2.py" --tiny
}
stage_cuda_tests() {
  local extra=()
  # a hung kernel ends the run with every thread's stack instead of eating the stage's cap
  if "$PY" -c "import pytest_timeout" 2>/dev/null; then extra=(--timeout=90 --timeout-method=thread); fi
  # -x and then --maxfail=25: the later wins, so pytest stops after 25 failures, not the first.
  # RUN_ALL_PYTEST_ARGS: more options (e.g. "-n 4" where pytest-xdist is installed), never a selection
  # shellcheck disable=SC2086  # OP_TESTS, OTHER_TESTS: lists of files (tests/test_<op>.py first)
  CUDA_LAUNCH_BLOCKING=1 "$PY" -m pytest -m cuda -q -rs -x --maxfail=25 $OP_TESTS $OTHER_TESTS "${extra[@]}" ${RUN_ALL_PYTEST_ARGS:-}
}
export -f stage_build stage_sanitizer stage_cuda_tests

# --- which stages this call runs ---
declare -A PREV_OUTCOME=() OUTCOME=() SECS=() NOTE=()
if [ -f "$STATE" ]; then
  while IFS=$'\t' read -r name outcome secs note; do
    PREV_OUTCOME[$name]=$outcome
  done < "$STATE"
fi
if [ "$MODE" = rerun ] && [ ${#PREV_OUTCOME[@]} -eq 0 ]; then
  echo "run_all.sh --rerun-failed: no state file at $STATE (a fresh machine keeps nothing: unpack the" \
       "last results.tar.gz into the repo first, or name the stages: --only a,b)" >&2
  exit 2
fi
matches() {  # matches NAME PATTERN: a stage's own name matches only itself (bench_train is not
  # bench_train_compile); any other pattern is a prefix (smoke: every smoke_*) or a glob (*_gelu)
  local name=$1 pat=$2 n
  for n in "${NAMES[@]}"; do
    if [ "$n" = "$pat" ]; then [ "$name" = "$pat" ]; return; fi
  done
  # shellcheck disable=SC2053  # the pattern is a glob on purpose
  [[ $name == $pat || $name == "${pat}"_* ]]
}
selected() {  # selected NAME: whether this call runs stage NAME
  local name=$1 pat
  case $name in versions|build) return 0 ;; esac
  case $MODE in
    all) return 0 ;;
    rerun) case ${PREV_OUTCOME[$name]:-missing} in ok|n/a) return 1 ;; *) return 0 ;; esac ;;
    only)
      IFS=, read -ra pats <<< "$ONLY"
      for pat in "${pats[@]}"; do
        if matches "$name" "$pat"; then return 0; fi
      done
      return 1 ;;
  esac
}
if [ "$MODE" = only ]; then  # a name that matches no stage is a typo: say so rather than run nothing
  IFS=, read -ra pats <<< "$ONLY"
  for pat in "${pats[@]}"; do
    hit=0
    for name in "${NAMES[@]}"; do
      if matches "$name" "$pat"; then hit=1; fi
    done
    [ $hit = 1 ] || { echo "run_all.sh --only: no stage is called '$pat' (--dry-run lists them)" >&2; exit 2; }
  done
fi

if [ $DRY = 1 ]; then
  echo "plan under a ${BUDGET} s budget (${RESERVE} s kept for the summary); expected seconds on an H200:"
  t=0; printf '%-26s %-4s %5s %5s %7s  %-7s %s\n' stage run exp cap "ends at" group command
  i=0
  while [ $i -lt ${#NAMES[@]} ]; do
    g=${GROUP[$i]}; j=$i; longest=0
    while [ $j -lt ${#NAMES[@]} ] && { [ $j = $i ] || { [ -n "$g" ] && [ "${GROUP[$j]}" = "$g" ]; }; }; do
      [ "${EXPECT[$j]}" -gt "$longest" ] && longest=${EXPECT[$j]}; j=$((j + 1))
    done
    any=0
    for ((k = i; k < j; k++)); do selected "${NAMES[$k]}" && any=1; done
    [ $any = 1 ] && t=$((t + longest))
    for ((k = i; k < j; k++)); do
      run=yes; selected "${NAMES[$k]}" || run=no
      fit=""; [ $run = yes ] && [ $t -gt $((BUDGET - RESERVE)) ] && fit="  (past the budget: skipped unless earlier stages are quicker)"
      printf '%-26s %-4s %5s %5s %6ss  %-7s %s%s\n' "${NAMES[$k]}" $run "${EXPECT[$k]}" "${CAP[$k]}" "$t" "${g:--}" "${CMD[$k]}" "$fit"
    done
    i=$j
  done
  exit 0
fi

# --- running stages ---
mkdir -p "$LOGS"
rm -f "$LOGS"/.result.* "$LOGS"/gpu_env.sh
export LOGS NPROC DEVICE
[ "$DEVICE" = cpu ] && export GPT_BENCH_RESULTS=$LOGS/results
GPU_ARCH="" SANITIZER="" SANITIZER_OPTS="" SANITIZER_NOTE="" RACECHECK=0 CUOBJDUMP=""
export GPU_ARCH SANITIZER SANITIZER_OPTS RACECHECK CUOBJDUMP
DEADLINE=$((SECONDS + BUDGET - RESERVE))
STOPPED=""  # why the remaining stages cannot run (stage 1 stopped, or the build failed)

note_of() {  # note_of NAME RC: one line for the table, from the stage's log
  local log=$LOGS/$1.log
  case $1 in
    versions) if [ "$2" = 0 ]; then grep -m1 -E '^(GPU \(torch\)|ready:)' "$log" | sed 's/^GPU (torch) *//'; else grep -m1 '^STOP:' "$log"; fi ;;
    build) if [ "$2" = 0 ]; then grep -m1 '^ *[0-9]* cubin' "$log" | sed 's/^ *//' || tail -n1 "$log"; else grep -m1 -iE 'error|fatal' "$log"; fi ;;
    smoke_*|memcheck_*|racecheck_*) grep -m1 -E '^(PASSED|FAILED) ' "$log" || grep -m1 -E 'ERROR SUMMARY|^FAIL' "$log" || tail -n1 "$log" ;;
    cuda_tests) tail -n1 "$log" ;;
    *) if [ "$2" = 0 ]; then grep '^wrote ' "$log" | sed -E 's|^wrote .*/([^/]+)\.json and .*|\1.md|' | paste -sd' ' -; else tail -n1 "$log"; fi ;;
  esac | sed 's/^ *//' | cut -c1-110
}

run_stage() {  # run_stage INDEX LIMIT: run one stage under its time limit; its outcome goes to a file
  local i=$1 limit=$2 name=${NAMES[$1]} started=$SECONDS rc outcome note
  timeout --kill-after=5 "$limit" bash -c "${CMD[$i]}" > "$LOGS/$name.log" 2>&1 < /dev/null
  rc=$?
  if [ $rc -eq 0 ]; then outcome=ok
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then outcome=CUT
  else outcome=FAILED
  fi
  note=$(note_of "$name" $rc)
  case $name in
    cuda_tests) [ $rc -eq 5 ] && note="no test selected: no test carries the cuda marker (pytest exit 5)" ;;
    memcheck_*|racecheck_*)  # the tool refusing the device is not our kernels failing
      if grep -qiE 'device not supported|unable to find|not supported on this platform' "$LOGS/$name.log"; then
        outcome=n/a; note="compute-sanitizer refused the device: $(grep -m1 -iE 'not supported|unable' "$LOGS/$name.log" | cut -c1-70)"
      fi ;;
  esac
  [ $outcome = CUT ] && note="cut at its ${limit} s limit; $note"
  [ $outcome = FAILED ] && note="exit $rc: $note"
  printf '%s\t%s\t%s\n' "$outcome" "$((SECONDS - started))" "$note" > "$LOGS/.result.$name"
}

collect() {  # collect INDEX: read a finished stage's outcome and show the end of its log
  local name=${NAMES[$1]} outcome secs note
  IFS=$'\t' read -r outcome secs note < "$LOGS/.result.$name"
  OUTCOME[$name]=$outcome; SECS[$name]=$secs; NOTE[$name]=$note
  echo "=== $name: $outcome (${secs} s) ${note}"
  if [ "$outcome" != ok ] && [ "$outcome" != n/a ]; then tail -n 15 "$LOGS/$name.log" | sed 's/^/    /'; fi
}

skip() {  # skip INDEX OUTCOME NOTE
  local name=${NAMES[$1]}
  OUTCOME[$name]=$2; SECS[$name]=-; NOTE[$name]=$3
  [ "$2" = "-" ] || echo "=== $name: $2 ($3)"
}

# start INDEX: decide whether stage INDEX runs now; if so, start it in the background
start() {
  local i=$1 name=${NAMES[$1]} left=$((DEADLINE - SECONDS)) limit
  if ! selected "$name"; then
    local prev=${PREV_OUTCOME[$name]:-}
    skip "$i" "-" "not selected${prev:+; last outcome: $prev}"; return 1
  fi
  if [ -n "$STOPPED" ]; then skip "$i" skipped "$STOPPED"; return 1; fi
  case $name in
    memcheck_*|racecheck_*)
      if [ -z "$SANITIZER" ]; then skip "$i" n/a "${SANITIZER_NOTE:-compute-sanitizer not available}"; return 1; fi
      if [[ $name == racecheck_* ]] && [ "$RACECHECK" != 1 ]; then skip "$i" n/a "racecheck does not work here (stage 1)"; return 1; fi ;;
  esac
  # versions and build are what every other stage needs: they start whenever 10 s are left
  local need=${EXPECT[$i]}
  case $name in versions|build) need=10 ;; esac
  if [ "$left" -lt "$need" ]; then
    skip "$i" skipped "needs ~${EXPECT[$i]} s, ${left} s of the budget left"; return 1
  fi
  limit=$((CAP[i] < left ? CAP[i] : left))
  echo "--- $name (at most ${limit} s)"
  run_stage "$i" "$limit" &
  return 0
}

i=0
while [ $i -lt ${#NAMES[@]} ]; do
  g=${GROUP[$i]}; j=$i; started=()
  # a group: consecutive stages with the same group name, run at the same time
  while [ $j -lt ${#NAMES[@]} ] && { [ $j = $i ] || { [ -n "$g" ] && [ "${GROUP[$j]}" = "$g" ]; }; }; do
    if start "$j"; then started+=("$j"); fi
    j=$((j + 1))
  done
  wait
  for k in "${started[@]}"; do collect "$k"; done
  case ${NAMES[$i]} in
    versions)
      [ "${OUTCOME[versions]}" = ok ] || STOPPED="stage 1 stopped the run"
      if [ -f "$LOGS/gpu_env.sh" ]; then
        # shellcheck disable=SC1091
        . "$LOGS/gpu_env.sh"
        export GPU_ARCH SANITIZER SANITIZER_OPTS RACECHECK CUOBJDUMP
        [ -n "$CUDA_HOME" ] && export CUDA_HOME
      fi ;;
    build)
      case ${OUTCOME[build]} in
        ok) ;;
        skipped) STOPPED=${STOPPED:-"no build (it was skipped)"} ;;
        *) STOPPED=${STOPPED:-"no build (build ${OUTCOME[build]})"} ;;
      esac ;;
  esac
  i=$j
done

# --- the summary: state file, summary.md, $OUT, and the table last ---
for name in "${NAMES[@]}"; do  # this call's outcomes; the previous ones for stages not run now
  if [ "${OUTCOME[$name]}" != "-" ]; then
    printf '%s\t%s\t%s\t%s\n' "$name" "${OUTCOME[$name]}" "${SECS[$name]}" "${NOTE[$name]}"
  elif [ -n "${PREV_OUTCOME[$name]:-}" ]; then
    awk -F'\t' -v n="$name" '$1 == n' "$STATE" | head -n1
  fi
done > "$STATE.new"
mv "$STATE.new" "$STATE"

not_passed=()
table() {
  printf '%-26s %-8s %5s %5s  %s\n' stage outcome s exp note
  for idx in "${!NAMES[@]}"; do
    name=${NAMES[$idx]}
    printf '%-26s %-8s %5s %5s  %s\n' "$name" "${OUTCOME[$name]}" "${SECS[$name]}" "${EXPECT[$idx]}" "${NOTE[$name]}"
  done
}
for name in "${NAMES[@]}"; do
  case ${OUTCOME[$name]} in ok|n/a|-) ;; *) not_passed+=("$name") ;; esac
done
status=0
for name in "${NAMES[@]}"; do
  case ${OUTCOME[$name]} in FAILED|CUT) status=1 ;; esac
done
[ "${OUTCOME[build]}" = ok ] || status=1  # without a build nothing was checked
[ "${OUTCOME[versions]}" = ok ] || status=3
rerun_line="everything selected passed"
if [ "${OUTCOME[versions]}" != ok ]; then
  rerun_line="stage 1 stopped the run: $(grep -m1 '^STOP:' "$LOGS/versions.log" || echo "see $LOGS/versions.log")"
elif [ ${#not_passed[@]} -gt 0 ]; then
  only=$(printf '%s\n' "${not_passed[@]}" | grep -vxE 'versions|build' | paste -sd, -)
  rerun_line="rerun what did not pass: bash bench/run_all.sh --rerun-failed${only:+   (fresh machine: --only $only)}"
fi

{
  where=$(grep -m1 '^GPU (torch)' "$LOGS/versions.log" 2>/dev/null | sed 's/^GPU (torch) *//')
  [ "$DEVICE" = cpu ] && where="the CPU (self-check of the script, nothing CUDA)"
  echo "# run_all.sh on ${where:-a machine where stage 1 found no usable GPU}"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(hostname), mode $MODE${ONLY:+ ($ONLY)}, budget ${BUDGET} s, took ${SECONDS} s."
  echo
  echo '## Versions (stage 1)'
  echo; echo '```'; cat "$LOGS/versions.log" 2>/dev/null; echo '```'; echo
  echo '## Stages'
  echo; echo '```'; table; echo '```'; echo
  echo "$rerun_line"
  for name in "${not_passed[@]}"; do
    if [ "${SECS[$name]}" = "-" ] || [ ! -f "$LOGS/$name.log" ]; then continue; fi  # not run in this call
    echo; echo "## $name: ${OUTCOME[$name]} (last 40 lines of $LOGS/$name.log)"
    echo; echo '```'; tail -n 40 "$LOGS/$name.log"; echo '```'
  done
  for f in "${GPT_BENCH_RESULTS:-bench/results}"/*"$DEVICE"*.md; do  # the tables this run wrote
    [ -f "$f" ] && [ "$f" -nt "$LOGS/versions.log" ] && { echo; cat "$f"; }
  done
} > "$LOGS/summary.md"

if [ -n "${OUT:-}" ]; then  # the device tool returns at most 8 files: these two
  mkdir -p "$OUT"
  cp "$LOGS/summary.md" "$OUT/summary.md"
  extra_logs=""; [[ $LOGS == bench/results/* ]] || extra_logs=$LOGS
  # shellcheck disable=SC2086  # extra_logs: nothing, or one folder outside bench/results
  tar czf "$OUT/results.tar.gz" bench/results $extra_logs 2>/dev/null || echo "run_all.sh: the tarball failed" >&2
fi

echo
echo "=== summary: ${SECONDS} s of a ${BUDGET} s budget; logs in $LOGS/ (summary.md)${OUT:+, copied to \$OUT}"
table
echo "$rerun_line"
exit $status
