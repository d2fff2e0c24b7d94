#!/usr/bin/env bash
# Install everything the tests need and run the whole suite, lint and type checks.
#   ./scripts/test.sh                 # everything (Python 3.11+ from $PYTHON or python3)
#   ./scripts/test.sh -k onnx         # extra arguments go to pytest
#   ./scripts/test.sh --fast          # the fast lane: no conversions or end-to-end runs (-m "not slow")
#   ./scripts/test.sh --python 3.13   # the device half on another Python, in .venv-3.13
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: mosquitto for the MQTT tests, wrk for the serve benchmark's smoke run (as
# root via apt-get, else sudo if present).
if { ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; } || ! command -v wrk >/dev/null 2>&1; then
  echo "==> installing mosquitto and wrk (system packages)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq mosquitto mosquitto-clients wrk >/dev/null
fi

if [ "${1:-}" = "--python" ]; then
  exec ./scripts/test_python.sh "${2:?--python needs a version, e.g. 3.13}" "${@:3}"
fi
PYTEST_ARGS=()
if [ "${1:-}" = "--fast" ]; then shift; PYTEST_ARGS+=(-m "not slow"); fi

. scripts/_venv.sh
echo "==> installing edge-runtime and edge-convert (editable) with every extra the tests use"
# torch first and pinned, so no other package asks for a newer one; on a plain PyPI index this
# is the large default build (see the README for the CPU-only index on a workstation).
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -e ".[tflite,http,plot,dev]" -e "./converters[tflite,torch,boost]"

echo "==> ruff"
"$VENV/bin/ruff" check edge_runtime converters tests scripts
echo "==> mypy"
"$VENV/bin/mypy"
echo "==> pytest"
"$VENV/bin/python" -m pytest -n 2 --dist load "${PYTEST_ARGS[@]}" "$@"
