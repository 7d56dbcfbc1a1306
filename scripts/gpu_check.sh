#!/usr/bin/env bash
# The GPU check: segexp trained, stepped and fed on a CUDA machine that has JAX and/or PyTorch,
# no TensorFlow and no network; prints one Markdown table (docs/benchmarks.md, "GPU check").
#   scripts/gpu_check.sh [--dry] [--budget 480] [--out table.md]
# First it installs what segexp still needs from the wheel folder $SEGEXP_WHEELS (default
# gpu_wheels/, made by scripts/gpu_wheels.sh on a machine with network): each wheel whose
# package is not installed yet, without dependencies and without the network.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${SEGEXP_WHEELS:-gpu_wheels}
if [ -d "$WHEELS" ]; then
  missing=$("$PYTHON" - "$WHEELS" <<'PY'
import importlib.metadata, pathlib, sys
for wheel in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    name = wheel.name.split("-")[0]
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        print(wheel)
PY
)
  if [ -n "$missing" ]; then
    # shellcheck disable=SC2086
    "$PYTHON" -m pip install --quiet --no-index --no-deps $missing
  fi
fi
exec "$PYTHON" scripts/gpu_check.py "$@"
