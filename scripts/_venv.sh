# Sourced by demo.sh and test.sh: make sure $VENV exists with a working pip.
# Debian/Ubuntu ship python3 without venv/ensurepip; install it (as root) or say how.
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "error: $PY not found; install Python 3.11+ (apt-get install python3 python3-venv)" >&2
  exit 2
fi
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: edge-runtime needs Python 3.11+, $PY is $("$PY" -V 2>&1)" >&2
  exit 2
fi
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "==> installing python3-venv (system package)"
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    else
      echo "error: $PY cannot create virtual environments; run: sudo apt-get install python3-venv" >&2
      exit 2
    fi
  fi
  echo "==> creating $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
