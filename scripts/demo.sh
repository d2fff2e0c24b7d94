#!/usr/bin/env bash
# From nothing to predictions: venv, install, train + log to MLflow, convert, predict, benchmark.
#   ./scripts/demo.sh            (re-runs reuse .venv; outputs go to demo-out/)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-demo-out}
. scripts/_venv.sh
echo "==> installing edge-runtime and edge-convert (the converters, a second distribution)"
"$VENV/bin/python" -m pip install -q -e . -e ./converters
export PATH="$PWD/$VENV/bin:$PATH"
mkdir -p "$OUT"
export MLFLOW_TRACKING_URI="sqlite:///$PWD/$OUT/mlflow.db"

echo "==> training a model and logging it to MLflow ($MLFLOW_TRACKING_URI)"
python scripts/demo_train.py --out "$OUT"

echo "==> converting models:/demo-wine@champion to ONNX (auto quantization)"
rm -rf "$OUT/artifact"
edge-convert "models:/demo-wine@champion" --format onnx --quantize auto \
  --calibration-data "$OUT/calibration.csv" --out "$OUT/artifact"

echo "==> the artifact"
edge-runtime info "$OUT/artifact"

echo "==> predicting $OUT/rows.csv on the artifact"
edge-runtime predict "$OUT/artifact" --input "$OUT/rows.csv"

echo "==> a short benchmark"
if edge-runtime bench --help >/dev/null 2>&1; then
  edge-runtime bench "$OUT/artifact" --runs 2000
fi

cat <<TXT

Done. Where everything went:
  MLflow store      $OUT/mlflow.db   (mlflow ui --backend-store-uri $MLFLOW_TRACKING_URI)
  artifact          $OUT/artifact/   (model.onnx + manifest.json: copy this folder to the device)
  sample rows       $OUT/rows.csv
On the device:      pip install /path/to/this/repo   (the runtime only: numpy, onnxruntime, paho-mqtt)
                    edge-runtime predict artifact --input rows.csv
TXT
