"""edge-runtime predict DIR --input FILE|-"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "predict", help="predict rows from a file or stdin; one JSON line out per row",
        description="Predict rows read from JSON, JSON lines, CSV (with a header) or .npy. "
        "Writes one JSON object per row: value, probabilities, source, model_version, latency_ms.",
        epilog="example: edge-runtime predict artifacts/iris --input rows.csv\n"
        "         echo '{\"x\": 1.5}' | edge-runtime predict artifacts/model --input -",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", metavar="DIR|DEVICE_CONFIG", help="artifact directory or device config (.toml)")
    p.add_argument("--input", "-i", required=True, metavar="FILE|-",
                   help="rows: .json, .jsonl, .csv, .npy or - for stdin")
    p.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import edge_runtime
    from edge_runtime.rows import read_rows

    if str(args.target).endswith(".toml"):
        rt = edge_runtime.load(config=args.target)
    else:
        rt = edge_runtime.load(args.target, threads=args.threads)
    m = rt.manifest
    rows = read_rows(args.input, m.feature_names, m.feature_types)
    preds = rt.predict_batch(rows) if isinstance(rows, np.ndarray) or len(rows) > 0 else ()
    out = sys.stdout
    for p in preds:
        out.write(json.dumps(p.to_dict(), default=str) + "\n")
    out.flush()
    rt.close()
    return 0
