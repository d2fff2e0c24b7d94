#!/usr/bin/env bash
# Proof on aarch64: the device wheel in a Debian bookworm arm64 root (Python 3.11, as on
# Raspberry Pi OS 64-bit), run under qemu-user-static: info and predict on an ONNX and a TFLite
# artifact, then the agent against a Mosquitto on this host for a few seconds.
#
#   sudo ./scripts/arm64_smoke.sh [WORKDIR]        # root: debootstrap, chroot, binfmt (10-25 min)
#
# Needs (installed here with apt if missing): debootstrap, qemu-user-static, binfmt-support, and
# this repository's .venv (./scripts/test.sh makes it) to build the test artifacts on the host.
# Not in .ci/run (too slow); its last result is in the README. Do NOT bind-mount /sys into the
# root: onnxruntime's CPU detection then reads the x86 host's CPU list and crashes under emulation.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=${1:-/tmp/edge-arm64}
ROOT="$WORK/root"
[ "$(id -u)" -eq 0 ] || { echo "run as root (debootstrap and chroot need it)"; exit 2; }

if ! command -v debootstrap >/dev/null || [ ! -e /usr/bin/qemu-aarch64-static ]; then
  echo "==> installing debootstrap, qemu-user-static, binfmt-support"
  apt-get update -qq && apt-get install -y -qq debootstrap qemu-user-static binfmt-support >/dev/null
fi
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount binfmt_misc -t binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || { echo "qemu-aarch64 is not registered with binfmt_misc"; exit 1; }

mkdir -p "$WORK"
if [ ! -x "$ROOT/usr/bin/python3" ]; then
  echo "==> debootstrap bookworm arm64 into $ROOT"
  debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$ROOT" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log"; exit 1; }
fi
cp /usr/bin/qemu-aarch64-static "$ROOT/usr/bin/"

echo "==> the device wheel and test artifacts (built on the host)"
rm -rf "$WORK/dist" "$ROOT/smoke" && mkdir -p "$WORK/dist" "$ROOT/smoke"
"$REPO/.venv/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/dist" "$REPO"
cp "$WORK"/dist/edge_runtime-*.whl "$ROOT/smoke/"
"$REPO/.venv/bin/python" - "$ROOT/smoke" <<'PY'
import sys, warnings
from pathlib import Path
sys.path.insert(0, ".")
out = Path(sys.argv[1])
warnings.simplefilter("ignore")
from scripts.bench_artifacts import iris_mlp_artifacts
onnx = iris_mlp_artifacts(out / "build", ("fp32",))["fp32"]
import shutil; shutil.copytree(onnx, out / "iris-onnx")
import numpy as np, keras, tensorflow as tf
from sklearn.datasets import load_iris
from edge_runtime.backends import open_backend
from edge_runtime.manifest import Manifest, TensorSpec, sha256_file, write_manifest
X, y = load_iris(return_X_y=True); X = X.astype(np.float32)
keras.utils.set_random_seed(0)
m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3, activation="softmax")])
m.compile("adam", "sparse_categorical_crossentropy"); [m.train_on_batch(X, y) for _ in range(40)]
d = out / "iris-tflite"; d.mkdir()
(d / "model.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(m).convert())
be = open_backend("tflite", d / "model.tflite")
preds = be.run({be.inputs()[0].name: X[:2]})[0].argmax(1).tolist()
write_manifest(d, Manifest(name="iris-tflite", version="1", backend="tflite", file="model.tflite",
    sha256=sha256_file(d / "model.tflite"), size_bytes=(d / "model.tflite").stat().st_size, task="classification",
    inputs=tuple(be.inputs()), outputs=(TensorSpec(be.outputs()[0].name, "float32", (None, 3), "probabilities"),),
    feature_names=("sepal_length", "sepal_width", "petal_length", "petal_width"), feature_types=("float",) * 4,
    classes=(0, 1, 2),
    smoke={"rows": X[:2].tolist(), "values": preds}))
shutil.rmtree(out / "build")
(out / "rows.csv").write_text("sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n6.7,3.1,4.4,1.4\n")
PY

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$PORT" > "$WORK/mosquitto.conf"
/usr/sbin/mosquitto -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
MOSQ=$!
cat > "$ROOT/smoke/device.toml" <<EOF
[device]
id = "arm64-smoke"
fleet = "smoke"
data_dir = "/smoke/data"
[model]
artifact = "/smoke/iris-onnx"
[mqtt]
host = "127.0.0.1"
port = $PORT
metrics_interval_s = 1
heartbeat_interval_s = 1
EOF

cleanup() { kill "$MOSQ" 2>/dev/null || true; umount "$ROOT/proc" "$ROOT/dev" 2>/dev/null || true; }
trap cleanup EXIT
mount -t proc proc "$ROOT/proc"
mount --bind /dev "$ROOT/dev"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# the host's CA bundle too, so pip in the root trusts what the host trusts (a TLS-inspecting proxy)
cp "${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" "$ROOT/etc/ssl/certs/host-ca.crt"

echo "==> inside the arm64 root (emulated)"
chroot "$ROOT" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root PIP_CERT=/etc/ssl/certs/host-ca.crt \
  SSL_CERT_FILE=/etc/ssl/certs/host-ca.crt PIP_DEFAULT_TIMEOUT=180 /bin/bash -e <<'IN'
cd /smoke
echo "uname -m: $(uname -m); $(python3 -V)"
[ -x venv/bin/python ] || python3 -m venv venv
venv/bin/pip install -q --upgrade pip >/dev/null
venv/bin/pip install -q "$(ls edge_runtime-*.whl)[tflite]"
venv/bin/pip list 2>/dev/null | grep -Ei "^(edge-runtime|onnxruntime|numpy|ai-edge-litert|paho-mqtt|cryptography) "
venv/bin/edge-runtime info iris-onnx
venv/bin/edge-runtime predict iris-onnx --input rows.csv
venv/bin/edge-runtime info iris-tflite
venv/bin/edge-runtime predict iris-tflite --input rows.csv
venv/bin/edge-runtime doctor --config device.toml || true
timeout -s TERM 20 venv/bin/edge-runtime run --config device.toml && rc=0 || rc=$?
echo "agent exit: $rc (124 = stopped by the timeout's SIGTERM, as intended)"
venv/bin/edge-runtime status --config device.toml
IN
echo "==> arm64 smoke run done"
