"""A report as a readable table, or as rows appended to a CSV history file."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from edge_runtime.bench.device import header_lines
from edge_runtime.bench.results import BenchReport, Measurement
from edge_runtime.errors import ConfigError

CSV_COLUMNS = [
    "started_at", "host", "cpu", "cores", "memory_bytes", "os", "python", "onnxruntime", "litert",
    "artifact", "label", "name", "version", "backend", "quantization", "file_size_bytes", "threads",
    "batch_size", "mode", "warmup", "runs", "load_ms", "session_ms", "first_ms", "min_ms", "mean_ms", "std_ms",
    "p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms", "inferences_per_s", "rows_per_s",
    "rss_before_bytes", "rss_after_bytes", "model_added_bytes", "peak_rss_bytes", "peak_is_per_measurement",
    "label_agreement", "max_abs_diff", "accuracy", "mae", "rmse", "timer_overhead_ns",
]


def _ms(v: float) -> str:
    if v < 0.1:
        return f"{v:.4f}"
    if v < 10:
        return f"{v:.3f}"
    return f"{v:.1f}"


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("MB", 1 << 20), ("KB", 1 << 10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _mb(n: int | None) -> str:
    return "?" if n is None else f"{n / (1 << 20):.1f}"


def _rate(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        # first column left-aligned (names), the rest right-aligned (numbers)
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _agree(m: Measurement) -> tuple[str, str]:
    a = m.agreement
    if a is None:
        return "ref", "-"
    diff = a.get("max_abs_diff")
    share = a.get("label_agreement")
    return ("-" if share is None else f"{100 * share:.1f}%"), ("-" if diff is None else f"{diff:.2g}")


def _acc(m: Measurement) -> str:
    a = m.accuracy
    if a is None:
        return "-"
    if "accuracy" in a:
        return f"{100 * a['accuracy']:.1f}%"
    return f"MAE {a['mae']:.3g}"


def format_table(report: BenchReport) -> str:
    res = report.results
    s = report.settings
    sweep = len({(m.threads, m.batch_size) for m in res}) > 1
    out = [*header_lines(report.device)]
    out.append(f"timing   mode {s['mode']}, warm-up {s['warmup']} runs, timer loop overhead "
               f"{report.timer_overhead_ns:.0f} ns per call (included in the numbers, not subtracted)")
    out.append("")
    out.append("Latency per call (ms)")
    head = ["artifact", "threads", "batch", "runs", "min", "mean", "std", "p50", "p90", "p95", "p99", "p99.9",
            "max", "inf/s", "rows/s"]
    rows = [[m.label, str(m.threads), str(m.batch_size), str(m.latency.runs), *(
        _ms(getattr(m.latency, k)) for k in ("min_ms", "mean_ms", "std_ms", "p50_ms", "p90_ms", "p95_ms",
                                             "p99_ms", "p999_ms", "max_ms")),
        _rate(m.latency.inferences_per_s), _rate(m.latency.rows_per_s)] for m in res]
    out.extend(_table(head, rows))
    out.append("")
    several = len({m.artifact for m in res}) > 1
    labelled = any(m.accuracy is not None for m in res)
    out.append("Artifacts" + (" (agreement: with the first artifact on the same rows)" if several else ""))
    head = ["artifact", "backend", "quant", "size", *(["threads", "batch"] if sweep else []), "load ms",
            "session ms", "first ms", "p50 ms", "rows/s", "+RSS MB", "peak MB"]
    if several:
        head += ["agree", "max|Δ|"]
    if labelled:
        head.append("accuracy")
    rows = []
    for m in res:
        r = [m.label, m.backend, m.quantization, _size(m.file_size_bytes),
             *([str(m.threads), str(m.batch_size)] if sweep else []), _ms(m.load_ms), _ms(m.session_ms),
             _ms(m.first_ms), _ms(m.latency.p50_ms), _rate(m.latency.rows_per_s), _mb(m.model_added_bytes),
             _mb(m.peak_rss_bytes)]
        if several:
            r.extend(_agree(m))
        if labelled:
            r.append(_acc(m))
        rows.append(r)
    out.extend(_table(head, rows))
    out.append("")
    out.append("load: hash check + session + smoke test; first: first inference after load; +RSS: resident "
               "memory the model added (after timing minus before load); peak: process peak RSS "
               + ("during each measurement" if all(m.peak_is_per_measurement for m in res) else "since start"))
    out.extend(f"note: {n}" for n in report.notes)
    return "\n".join(out)


def csv_row(report: BenchReport, m: Measurement) -> dict[str, Any]:
    d = report.device
    lat = m.latency
    agr = m.agreement or {}
    acc = m.accuracy or {}
    return {
        "started_at": report.started_at, "host": d.get("host"), "cpu": d.get("cpu"), "cores": d.get("cores"),
        "memory_bytes": d.get("memory_bytes"), "os": d.get("os"), "python": d.get("python"),
        "onnxruntime": d.get("onnxruntime"), "litert": d.get("litert"),
        **{k: getattr(m, k) for k in ("artifact", "label", "name", "version", "backend", "quantization",
                                      "file_size_bytes", "threads", "batch_size", "mode", "warmup", "load_ms",
                                      "session_ms", "first_ms", "rss_before_bytes", "rss_after_bytes",
                                      "model_added_bytes", "peak_rss_bytes", "peak_is_per_measurement")},
        **{k: getattr(lat, k) for k in ("runs", "min_ms", "mean_ms", "std_ms", "p50_ms", "p90_ms", "p95_ms",
                                        "p99_ms", "p999_ms", "max_ms", "inferences_per_s", "rows_per_s")},
        "label_agreement": agr.get("label_agreement"), "max_abs_diff": agr.get("max_abs_diff"),
        "accuracy": acc.get("accuracy"), "mae": acc.get("mae"), "rmse": acc.get("rmse"),
        "timer_overhead_ns": round(report.timer_overhead_ns, 1),
    }


def append_csv(report: BenchReport, path: str | Path) -> int:
    """Append one row per measurement to a history file (header written when the file is new)."""
    p = Path(path)
    exists = p.is_file() and p.stat().st_size > 0
    if exists:
        with open(p, newline="") as f:
            header = next(csv.reader(f), [])
        if header != CSV_COLUMNS:
            raise ConfigError("the file's columns are not this version's bench history columns; "
                              "append to a new file", file=p, key="--csv")
    try:
        with open(p, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
            if not exists:
                w.writeheader()
            for m in report.results:
                w.writerow(csv_row(report, m))
    except OSError as exc:
        raise ConfigError(f"cannot write: {exc.strerror}", file=p, key="--csv") from exc
    return len(report.results)
