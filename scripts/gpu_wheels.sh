#!/usr/bin/env bash
# Download the wheels scripts/gpu_check.sh installs on a GPU machine without network: every
# package of scripts/gpu_wheels.txt as a Python 3.12 x86-64 Linux wheel, into gpu_wheels/
# (git-ignored; about 25 MB). antlr4-python3-runtime has no wheel on PyPI: it is built here.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${SEGEXP_WHEELS:-gpu_wheels}
mkdir -p "$OUT"
grep -v '^#' scripts/gpu_wheels.txt | grep -v '^antlr4' > "$OUT/.requirements.txt"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --abi cp312 --abi abi3 --abi none \
  --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_34_x86_64 --platform manylinux1_x86_64 --platform any \
  -d "$OUT" -r "$OUT/.requirements.txt"
"$PYTHON" -m pip wheel --quiet --no-deps -w "$OUT" "$(grep '^antlr4' scripts/gpu_wheels.txt)"
rm "$OUT/.requirements.txt"
du -sh "$OUT"
