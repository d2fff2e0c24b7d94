#!/usr/bin/env bash
# The device half's tests on another Python: ./scripts/test_python.sh 3.13 [pytest args]
# Finds pythonX.Y on PATH or under pyenv; says so plainly (exit 0) when this machine has none.
set -euo pipefail
cd "$(dirname "$0")/.."
want=$1; shift
PY=""
for c in "$HOME/.pyenv/versions/$want"*/bin/python "/usr/local/bin/python$want" "python$want"; do
  # a pyenv shim exists for versions it cannot run: the candidate must really start
  if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys' >/dev/null 2>&1; then PY=$(command -v "$c"); break; fi
done
if [ -z "$PY" ]; then
  echo "==> SKIPPED the Python $want lane: no python$want on this machine (install it, or pyenv install $want)"
  exit 0
fi
echo "==> Python $want lane with $PY ($("$PY" -V))"
VENV=".venv-$want"; PYTHON="$PY"
. scripts/_venv.sh
# the device distribution with its extras, and what the tests use to build real ONNX models
"$VENV/bin/python" -m pip install -q -e ".[tflite,http,dev]" "scikit-learn>=1.4" "skl2onnx>=1.17" "onnx>=1.16"
"$VENV/bin/python" -m pytest -n 2 --dist load -m "not slow" -p no:cacheprovider \
  tests/runtime tests/reliability tests/agent tests/sync tests/updates tests/test_public_api.py tests/test_architecture.py "$@"
