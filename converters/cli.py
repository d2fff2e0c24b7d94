"""The ``edge-convert`` command (also ``python -m converters``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, NoReturn

from edge_runtime.errors import EdgeRuntimeError

EXAMPLE = """examples:
  edge-convert models:/churn/3 --format onnx --quantize auto --calibration-data rows.csv --out artifacts/churn
  edge-convert runs:/4f1c.../model --quantize dynamic --tracking-uri sqlite:///mlflow.db --out artifacts/m
  edge-convert ./saved_model_dir --n-features 8 --out artifacts/m      # a model logged without a signature

exit codes: 0 ok, 2 bad arguments, 4 conversion failed or broke the parity gate"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not usage + error
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from converters.convert import FORMATS
    from converters.quantizers import DEFAULT_TIMEOUT_S, MODES

    p = _Parser(prog="edge-convert", description="Convert an MLflow model to a verified, quantized "
                "artifact directory for edge-runtime.", epilog=EXAMPLE,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="SOURCE", help="runs:/<run_id>/<path>, models:/<name>/<version>, "
                   "models:/<name>@<alias>, or a directory holding an MLmodel file")
    p.add_argument("--format", default="onnx", choices=FORMATS, help="artifact format (default onnx)")
    p.add_argument("--quantize", default="none", choices=MODES,
                   help="none | dynamic (int8 weights) | static (int8, calibrated) | fp16 | auto: try "
                   "each that applies, keep the smallest within --max-accuracy-drop and not slower (default none)")
    p.add_argument("--calibration-data", metavar="FILE", help="typical input rows (.csv with header, .parquet, "
                   ".json, .npy): static calibration, held-out parity rows and the drift reference")
    p.add_argument("--max-accuracy-drop", type=float, default=0.01, metavar="FRACTION",
                   help="parity limit: share of labels that may differ (regression: mean |diff| / std of "
                   "predictions); default 0.01")
    p.add_argument("--out", required=True, metavar="DIR", help="artifact directory to write (replaced atomically)")
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking store (default: $MLFLOW_TRACKING_URI)")
    p.add_argument("--name", help="artifact name (default: registered model name or the model path)")
    p.add_argument("--version", help="artifact version (default: registered version, else run id + time)")
    p.add_argument("--n-features", type=int, metavar="N", help="feature count, for a model logged without a signature")
    p.add_argument("--sample-data", metavar="FILE", help="typical rows, for a model logged without a signature")
    p.add_argument("--candidate-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help=f"time limit per quantization attempt in seconds (default {DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--tflite-int8-io", action="store_true",
                   help="with --format tflite --quantize static: int8 model inputs/outputs as well (the "
                   "runtime still takes and returns floats); default float32 inputs/outputs")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    return p


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_report(report: Any, out: Any = sys.stdout) -> None:
    from converters.parity import describe

    m = report.manifest
    w = out.write
    w(f"converted {m.source.get('uri')} ({m.source.get('flavor')} {m.source.get('model_class')}) -> {report.out}\n")
    w(f"  {m.name} version {m.version}: {m.backend}, quantization {report.mode}, {m.size_bytes:,} bytes, "
      f"{m.n_features} features, {m.task}\n")
    w(f"  parity: {describe(report.parity)} [{report.parity.get('rows_source')} rows]\n")
    if len(report.candidates) > 1:
        w(f"  {'mode':<8} {'bytes':>10} {'p50 µs':>8} {'agreement':>9} {'drop':>7}  decision\n")
        for c in report.candidates:
            p50 = None if c["p50_ms"] is None else c["p50_ms"] * 1000
            w(f"  {c['mode']:<8} {_fmt(c['size_bytes'], ',d'):>10} {_fmt(p50, '.1f'):>8} "
              f"{_fmt(c['agreement'], '.4f'):>9} {_fmt(c['drop'], '.4f'):>7}  {c['reason']}\n")
    for note in report.notes:
        w(f"  note: {note}\n")


def main(argv: list[str] | None = None) -> int:
    from edge_runtime.errors import exit_code

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import converters

    try:
        report = converters.convert(
            args.source, format=args.format, quantize=args.quantize, out=args.out,
            calibration_data=args.calibration_data, max_accuracy_drop=args.max_accuracy_drop,
            tracking_uri=args.tracking_uri, name=args.name, version=args.version, n_features=args.n_features,
            sample_data=args.sample_data, candidate_timeout=args.candidate_timeout,
            tflite_int8_io=args.tflite_int8_io)
    except EdgeRuntimeError as exc:
        print(f"edge-convert: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        return 130
    print_report(report)
    return 0
