"""Latency distributions side by side: CDF and histogram (matplotlib, the [plot] extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.bench.results import BenchReport
from edge_runtime.errors import ConfigError

EXTRA_HINT = "--plot needs matplotlib: pip install 'edge-runtime[plot]'"


def require_matplotlib() -> None:
    """Fail before the benchmark runs, not after, when the plot cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ConfigError(EXTRA_HINT, key="--plot") from exc


def plot_latency(report: BenchReport, path: str | Path) -> Path:
    """Write a PNG: per measurement, the latency CDF (left) and histogram (right)."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")  # no display on a device
    import matplotlib.pyplot as plt

    series: list[tuple[str, Any]] = []
    sweep = len({(m.threads, m.batch_size) for m in report.results}) > 1
    for m in report.results:
        if m.samples_ns is None or m.samples_ns.size == 0:
            continue
        name = m.label + (f" t{m.threads} b{m.batch_size}" if sweep else "")
        series.append((name, np.sort(m.samples_ns.astype(np.float64) / 1e6)))
    if not series:
        raise ConfigError("the report holds no latency samples to plot", key="--plot")
    fig, (ax_cdf, ax_hist) = plt.subplots(1, 2, figsize=(12, 4.5))
    # log-spaced bins: sub-0.1 ms bodies and multi-ms tails (preemption, GC) in one picture
    hi = max(float(s[-1]) for _, s in series)
    lo = max(min(float(s[0]) for _, s in series), 1e-6)
    bins = np.geomspace(lo, hi * 1.001 if hi > lo else lo * 2, 80)
    for name, s in series:
        ax_cdf.plot(s, np.arange(1, s.size + 1) / s.size, label=f"{name} (p50 {np.median(s):.3g} ms)")
        ax_hist.hist(s, bins=bins, histtype="step", linewidth=1.5, label=name)
    ax_cdf.set_xscale("log")
    ax_cdf.set_xlabel("latency per call (ms, log scale)")
    ax_cdf.set_ylabel("share of calls at or below")
    ax_cdf.set_title("Latency CDF")
    ax_cdf.grid(True, alpha=0.3)
    ax_cdf.legend(fontsize=8)
    ax_hist.set_xscale("log")
    ax_hist.set_yscale("log")
    ax_hist.set_xlabel("latency per call (ms, log scale)")
    ax_hist.set_ylabel("calls (log scale)")
    ax_hist.set_title("Latency histogram")
    ax_hist.legend(fontsize=8)
    d = report.device
    load = f", load {d['load_avg_1m']}" if d.get("load_avg_1m") is not None else ""
    fig.suptitle(f"{d.get('host')}: {d.get('cpu')}, {d.get('cores')} cores, {d.get('onnxruntime')}, "
                 f"{d.get('litert')}, mode {report.settings.get('mode')}{load}", fontsize=9)
    fig.tight_layout()
    out = Path(path)
    try:
        fig.savefig(out, format="png", dpi=100)
    except OSError as exc:
        raise ConfigError(f"cannot write the plot: {exc.strerror}", file=out, key="--plot") from exc
    finally:
        plt.close(fig)
    return out
