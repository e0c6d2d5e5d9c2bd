#!/usr/bin/env bash
# Download the pure-Python wheels the lent GPU box lacks into .whl/gpu (git-ignored), for gpu_run.sh.
# The box has torch 2.11 + triton 3.6 + transformers 5.17 and no network (../shared/GPU.md): we carry
# transformers 5.23 (the Qwen3.5/FalconH1 code this harness is written against), flash-linear-attention and the
# packages their versions need. About 25 MB, under the 64 MiB carry limit.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl/gpu
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl/gpu \
  transformers==5.23.0 tokenizers==0.23.3 huggingface_hub==1.33.0 hf_xet==1.8.0 safetensors==0.8.0 \
  regex==2026.11.15 typer==0.29.2 peft==0.21.2 flash-linear-attention==0.6.0 fla-core==0.6.0 einops==0.8.2
ls .whl/gpu
