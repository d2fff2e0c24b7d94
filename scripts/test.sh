#!/usr/bin/env bash
# Install everything the tests need and run the whole suite, lint and type checks.
#   ./scripts/test.sh            # everything
#   ./scripts/test.sh -k onnx    # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: mosquitto for the MQTT tests (as root via apt-get, else sudo if present).
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  echo "==> installing mosquitto (system package)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
fi

. scripts/_venv.sh
echo "==> installing the package with every extra the tests use"
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -e ".[convert,tflite,tflite-convert,torch,boost,http,plot,dev]"

echo "==> ruff"
"$VENV/bin/ruff" check edge_runtime converters tests scripts
echo "==> mypy"
"$VENV/bin/mypy"
echo "==> pytest"
"$VENV/bin/python" -m pytest -n 2 --dist loadgroup "$@"
