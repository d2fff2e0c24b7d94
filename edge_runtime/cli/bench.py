"""edge-runtime bench DIR [DIR ...]"""

from __future__ import annotations

import argparse
import math
import sys

EPILOG = """examples:
  edge-runtime bench artifacts/iris
  edge-runtime bench artifacts/iris-fp32 artifacts/iris-int8 --input rows.csv --labels labels.csv
  edge-runtime bench artifacts/iris --threads 1,2,4 --batch-size 1,32 --duration 5 --json
  edge-runtime bench artifacts/a artifacts/b --isolate --csv history.csv --plot latency.png

Without --runs or --duration: 1000 runs, or fewer (at least 50) once 10 s have passed.
Without --input: rows are drawn from the first artifact's reference histograms (--rows, --seed).
Exit codes: 0 ok, 2 bad arguments or input, 3 an artifact cannot be loaded."""


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def _non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {v}")
    return v


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return v


def _int_list(minimum: int):  # type: ignore[no-untyped-def]
    def parse(text: str) -> list[int]:
        out = []
        for part in text.split(","):
            part = part.strip()
            try:
                v = int(part)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers like 1,2,4, "
                                                 f"got {text!r}") from None
            if v < minimum:
                raise argparse.ArgumentTypeError(f"each value must be at least {minimum}, got {v}")
            out.append(v)
        return out

    return parse


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "bench", help="measure load time, latency, throughput and memory of artifacts on this device",
        description="Benchmark one or more artifacts (ONNX and TFLite alike) on this device: load time,\n"
        "first inference, latency percentiles, throughput, memory and file size, with a device header.\n"
        "With several artifacts (e.g. fp32, fp16 and int8 of one model) adds their agreement with the\n"
        "first on the same rows, and accuracy with --labels.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+", metavar="DIR", help="artifact directories; the first is the reference")
    how = p.add_argument_group("how long")
    stop = how.add_mutually_exclusive_group()
    stop.add_argument("--runs", type=_positive_int, help="timed runs per measurement")
    stop.add_argument("--duration", type=_seconds, metavar="S", help="time each measurement for S seconds")
    how.add_argument("--warmup", type=_non_negative_int, default=20, help="untimed runs first (default 20)")
    what = p.add_argument_group("what to run")
    what.add_argument("--threads", type=_int_list(0), action="append", metavar="N[,N...]",
                      help="intra-op threads; a list sweeps (default 1; 0 = the backend's choice)")
    what.add_argument("--batch-size", type=_int_list(1), action="append", metavar="N[,N...]",
                      help="rows per call; a list sweeps (default 1)")
    what.add_argument("--backend", default="auto", choices=["auto", "onnx", "tflite"],
                      help="force a backend where an artifact could run on several (default auto)")
    what.add_argument("--mode", default="backend", choices=["backend", "predict"],
                      help="time the backend call on prepared inputs (default), or Runtime.predict end to "
                      "end (validation, backend, decoding)")
    what.add_argument("--isolate", action="store_true",
                      help="run each artifact in its own process, so its memory numbers are its own")
    data = p.add_argument_group("rows")
    data.add_argument("--input", "-i", metavar="FILE", help="rows: .json, .jsonl, .csv or .npy")
    data.add_argument("--labels", metavar="FILE", help="ground truth per input row, for accuracy (needs --input)")
    data.add_argument("--rows", type=_positive_int, default=256,
                      help="rows drawn from the reference histograms without --input (default 256)")
    data.add_argument("--seed", type=int, default=0, help="seed for drawn rows (default 0)")
    out = p.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    out.add_argument("--csv", metavar="FILE", help="append one row per measurement to this history file")
    out.add_argument("--plot", metavar="FILE.png", help="draw latency CDFs and histograms ([plot] extra)")
    out.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_runtime.bench.compare import read_labels
    from edge_runtime.bench.plot import plot_latency, require_matplotlib
    from edge_runtime.bench.progress import ProgressBars
    from edge_runtime.bench.report import append_csv, format_table
    from edge_runtime.bench.runner import BenchSettings, bench
    from edge_runtime.errors import ConfigError
    from edge_runtime.manifest import read_manifest
    from edge_runtime.rows import read_rows

    if args.plot:
        if not str(args.plot).lower().endswith(".png"):
            raise ConfigError(f"the plot file must end in .png, got {args.plot!r}", key="--plot")
        require_matplotlib()
    if args.labels and not args.input:
        raise ConfigError("--labels needs --input: ground truth belongs to specific rows", key="--labels")
    threads = tuple(v for group in (args.threads or [[1]]) for v in group)
    batches = tuple(v for group in (args.batch_size or [[1]]) for v in group)
    settings = BenchSettings(runs=args.runs, duration_s=args.duration, warmup=args.warmup,
                             threads=tuple(dict.fromkeys(threads)), batch_sizes=tuple(dict.fromkeys(batches)),
                             backend=args.backend, mode=args.mode, rows=args.rows, seed=args.seed,
                             isolate=args.isolate)
    rows = labels = None
    if args.input:
        first = read_manifest(args.dirs[0])
        rows = read_rows(args.input, first.feature_names, first.feature_types)
        if args.labels:
            labels = read_labels(args.labels, first.task)
    bars = ProgressBars() if sys.stderr.isatty() and not args.no_progress else None
    try:
        report = bench(args.dirs, settings, rows=rows, labels=labels, progress=bars)
    finally:
        if bars is not None:
            bars.close()
    if args.json:
        print(report.to_json())
    else:
        print(format_table(report))
    if args.csv:
        n = append_csv(report, args.csv)
        print(f"appended {n} row(s) to {args.csv}", file=sys.stderr)
    if args.plot:
        plot_latency(report, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0
