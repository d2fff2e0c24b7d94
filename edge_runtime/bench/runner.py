"""Run the benchmark: each artifact × threads × batch size is loaded fresh, measured, closed.

Per measurement: gc, reset the process's peak RSS, sample RSS, ``LoadedModel.open`` (hash
check, backend session, tensor checks), prepare the feeds (untimed), time the first inference,
run the manifest's smoke test (counted in the load time), warm up, time the runs, sample RSS
again. The timed region holds only the call under test: ``backend.run(feeds)`` in ``backend``
mode, ``Runtime.predict`` / ``predict_batch`` on the raw rows in ``predict`` mode.
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.backends import BackendOptions
from edge_runtime.bench import memory
from edge_runtime.bench.compare import accuracy, agreement
from edge_runtime.bench.device import device_info
from edge_runtime.bench.inputs import n_rows, rows_from_reference, take_rows
from edge_runtime.bench.measure import LatencyStats, Progress, stats_from_ns, time_feeds, timer_overhead_ns
from edge_runtime.bench.results import BenchReport, Measurement
from edge_runtime.errors import ConfigError, EdgeRuntimeError, InvalidInput, ModelLoadError
from edge_runtime.manifest import Manifest, read_manifest
from edge_runtime.model import LoadedModel

log = logging.getLogger(__name__)

MODES = ("backend", "predict")
DEFAULT_RUNS = 1000  # without --runs/--duration: 1000 runs, or fewer if they take over DEFAULT_MAX_S
DEFAULT_MAX_S = 10.0
DEFAULT_MIN_RUNS = 50
MAX_FEEDS = 1024  # distinct prepared batches cycled through; bounds the memory feeds take
EVAL_CHUNK = 256

# progress(description, done, total, unit)
ProgressSink = Callable[[str, float, float, str], None]
Rows = np.ndarray | list[Any]


@dataclass(frozen=True)
class BenchSettings:
    runs: int | None = None
    duration_s: float | None = None
    warmup: int = 20
    threads: tuple[int, ...] = (1,)
    batch_sizes: tuple[int, ...] = (1,)
    backend: str = "auto"
    mode: str = "backend"
    rows: int = 256  # rows generated from the reference histograms when no input is given
    seed: int = 0
    isolate: bool = False  # each artifact in its own process
    keep_samples: bool = True

    def check(self) -> None:
        def bad(key: str, reason: str) -> ConfigError:
            return ConfigError(reason, key=key)

        if self.runs is not None and self.runs < 1:
            raise bad("runs", f"must be at least 1, got {self.runs}")
        if self.duration_s is not None and not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            raise bad("duration", f"must be a positive number of seconds, got {self.duration_s}")
        if self.warmup < 0:
            raise bad("warmup", f"must be 0 or more, got {self.warmup}")
        if not self.threads or any(t < 0 for t in self.threads):
            raise bad("threads", f"need thread counts of 0 (backend's choice) or more, got {list(self.threads)}")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise bad("batch_size", f"need batch sizes of 1 or more, got {list(self.batch_sizes)}")
        if self.mode not in MODES:
            raise bad("mode", f"{self.mode!r} is not one of {', '.join(MODES)}")
        if self.rows < 1:
            raise bad("rows", f"must be at least 1, got {self.rows}")

    def limits(self) -> tuple[int | None, float | None, int]:
        """(runs, duration_s, min_runs) for ``time_feeds``."""
        if self.runs is None and self.duration_s is None:
            return DEFAULT_RUNS, DEFAULT_MAX_S, DEFAULT_MIN_RUNS
        return self.runs, self.duration_s, 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["threads"] = list(self.threads)
        d["batch_sizes"] = list(self.batch_sizes)
        d.pop("keep_samples")
        return d


@dataclass
class ArtifactRun:
    """One artifact's measurements and its answers on the shared evaluation rows."""

    measurements: list[Measurement]
    values: list[Any]
    proba: np.ndarray | None
    task: str
    notes: list[str] = field(default_factory=list)


def bench(paths: Sequence[str | Path], settings: BenchSettings, *, rows: Rows | None = None,
          labels: list[Any] | None = None, progress: ProgressSink | None = None) -> BenchReport:
    """Benchmark artifacts; the first one is the reference for agreement.

    ``rows`` are the input rows (as ``edge_runtime.rows.read_rows`` returns them); without them
    rows are drawn from the first artifact's reference histograms. ``labels`` (one per row)
    add accuracy.
    """
    settings.check()
    if not paths:
        raise ConfigError("give at least one artifact directory")
    started = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    manifests = [read_manifest(p) for p in paths]  # unreadable artifacts fail before any timing
    for p, m in zip(paths, manifests, strict=True):
        if settings.backend not in ("auto", m.backend):
            raise ModelLoadError(p, f"--backend {settings.backend} was asked for but this artifact is "
                                 f"for {m.backend!r}", hint="Use --backend auto, or convert the model "
                                 f"with --format {settings.backend}.")
    notes: list[str] = []
    first = manifests[0]
    generated = rows is None
    if rows is None:
        if labels is not None:
            raise ConfigError("--labels needs --input: ground truth belongs to specific rows", key="labels")
        rows = rows_from_reference(first, settings.rows, settings.seed)
        notes.append(f"{n_rows(rows)} input rows drawn from the reference histograms of {first.name} "
                     f"(seed {settings.seed})")
    elif n_rows(rows) == 0:
        raise InvalidInput("the input file holds no rows")
    if labels is not None and len(labels) != n_rows(rows):
        raise InvalidInput(f"--labels has {len(labels)} labels for {n_rows(rows)} input rows; "
                           "give one label per row, in the same order")
    overhead = timer_overhead_ns()
    runs: list[ArtifactRun] = []
    for i, (path, m) in enumerate(zip(paths, manifests, strict=True)):
        art_rows = rows
        if i > 0 and m.feature_names != first.feature_names:
            if not generated:
                raise InvalidInput(f"{path} takes features {', '.join(m.feature_names)} but {paths[0]} takes "
                                   f"{', '.join(first.feature_names)}; benchmark one model's artifacts together")
            art_rows = rows_from_reference(m, settings.rows, settings.seed)
            notes.append(f"{path} has other features than {paths[0]}: its rows are its own, no agreement")
        if settings.isolate:
            run = _run_isolated(path, art_rows, settings, progress=progress is not None)
        else:
            run = run_artifact(path, art_rows, settings, progress=progress)
        runs.append(run)
        notes.extend(run.notes)
    ref = runs[0]
    for i, (run, m) in enumerate(zip(runs, manifests, strict=True)):
        agr = None
        if i > 0 and m.feature_names == first.feature_names and m.task == first.task:
            agr = agreement(m.task, ref.values, run.values, ref.proba, run.proba)
        acc = accuracy(m.task, run.values, labels) if labels is not None else None
        for meas in run.measurements:
            meas.agreement = agr
            meas.accuracy = acc
    if not any(meas.peak_is_per_measurement for run in runs for meas in run.measurements):
        notes.append("peak RSS is the process peak since start (this OS cannot reset it); use --isolate "
                     "for each artifact's own peak")
    device = device_info(list(settings.threads))
    load, usable = device.get("load_avg_1m"), device.get("cores_usable") or 1
    if load is not None and load > usable:
        notes.append(f"load average {load} on {usable} usable cores: other processes competed for the CPU "
                     "during this run, so latencies (tails first) are noisier than on a quiet device")
    return BenchReport(device=device, settings=settings.to_dict(),
                       timer_overhead_ns=overhead, started_at=started,
                       results=[meas for run in runs for meas in run.measurements], notes=notes)


def run_artifact(path: str | Path, rows: Rows, settings: BenchSettings,
                 progress: ProgressSink | None = None, label: str | None = None) -> ArtifactRun:
    """Every threads × batch-size measurement of one artifact, in this process."""
    manifest = read_manifest(path)
    label = label or Path(path).name or str(path)
    notes = [f"{label}: {n}" for n in _prime(path, manifest, settings)]
    measurements: list[Measurement] = []
    values: list[Any] | None = None
    proba: np.ndarray | None = None
    for threads in settings.threads:
        for batch in settings.batch_sizes:
            desc = f"{label} threads={threads} batch={batch}"
            sink: Progress | None = None
            if progress is not None:
                def sink(done: float, total: float, unit: str, _d: str = desc) -> None:
                    progress(_d, done, total, unit)
            meas, evals = _measure(path, manifest, label, rows, threads, batch, settings, sink,
                                   evaluate=values is None)
            if evals is not None:
                values, proba = evals
            measurements.append(meas)
    assert values is not None
    return ArtifactRun(measurements, values, proba, manifest.task, notes)


_primed: set[str] = set()


def _prime(path: str | Path, manifest: Manifest, settings: BenchSettings) -> list[str]:
    """Load once, untimed, the first time a backend is used in this process.

    The first session of a process pays for the library's own start-up (onnxruntime: ~100 ms and
    ~30 MB); charging that to whichever artifact comes first would make it look worse than the
    others. It is reported as a note instead.
    """
    if manifest.backend in _primed:
        return []
    _primed.add(manifest.backend)
    gc.collect()
    before = memory.sample()
    t0 = time.perf_counter_ns()
    LoadedModel.open(path, BackendOptions(threads=settings.threads[0]), settings.backend).close()
    ms = (time.perf_counter_ns() - t0) / 1e6
    after = memory.sample()
    added = "" if after.rss_bytes is None or before.rss_bytes is None else \
        f", RSS +{(after.rss_bytes - before.rss_bytes) / (1 << 20):.1f} MB"
    return [f"{manifest.backend} start-up in this process (a first load, not in the tables): "
            f"{ms:.1f} ms{added}"]


def _measure(path: str | Path, manifest: Manifest, label: str, rows: Rows, threads: int, batch: int,
             settings: BenchSettings, progress: Progress | None,
             evaluate: bool) -> tuple[Measurement, tuple[list[Any], np.ndarray | None] | None]:
    clock = time.perf_counter_ns
    gc.collect()
    per_run_peak = memory.reset_peak()
    before = memory.sample()
    t0 = clock()
    model = LoadedModel.open(path, BackendOptions(threads=threads), settings.backend, smoke=False)
    open_ns = clock() - t0
    close: Callable[[], None] = model.close
    try:
        run, feeds, close = _prepare(model, rows, batch, settings.mode, threads)
        t0 = clock()
        run(feeds[0])
        first_ns = clock() - t0
        t0 = clock()
        model.smoke_test()
        smoke_ns = clock() - t0
        model.smoke_ok = bool(manifest.smoke)
        n_runs, duration, min_runs = settings.limits()
        samples = time_feeds(run, feeds, runs=n_runs, duration_s=duration, min_runs=min_runs,
                             warmup=settings.warmup, progress=progress, progress_every_s=0.5)
        after = memory.sample()
        evals = _predict_all(model, rows) if evaluate else None
    finally:
        close()
    q = manifest.quantization or {}
    meas = Measurement(
        artifact=str(path), label=label, name=manifest.name, version=manifest.version,
        backend=manifest.backend, quantization=str(q.get("mode", "none")),
        file_size_bytes=(Path(path) / manifest.file).stat().st_size, threads=threads, batch_size=batch,
        mode=settings.mode, load_ms=(open_ns + smoke_ns) / 1e6, session_ms=model.backend_ms,
        first_ms=first_ns / 1e6, warmup=settings.warmup, latency=stats_from_ns(samples, batch),
        rss_before_bytes=before.rss_bytes, rss_after_bytes=after.rss_bytes,
        model_added_bytes=(after.rss_bytes - before.rss_bytes
                           if after.rss_bytes is not None and before.rss_bytes is not None else None),
        peak_rss_bytes=after.peak_bytes, peak_is_per_measurement=per_run_peak,
        samples_ns=samples if settings.keep_samples else None,
    )
    return meas, evals


def time_model(model: LoadedModel, rows: Any, *, runs: int = DEFAULT_RUNS, warmup: int = 20,
               batch_size: int = 1) -> LatencyStats:
    """Latency of an already loaded model as ``edge-runtime bench`` measures it in backend mode:
    the backend call on feeds the model's InputAdapter built from ``rows`` beforehand, cycled
    through ``time_feeds``. ``edge-convert --quantize auto`` can rank candidates with this, so
    its choice is the one bench would show. ``rows``: 2-D array, list of rows/dicts, DataFrame.
    """
    if hasattr(rows, "columns") and hasattr(rows, "to_dict"):  # pandas, duck-typed
        rows = rows[list(model.manifest.feature_names)].to_numpy() \
            if model.adapter.layout == "tensor" else rows.to_dict("records")
    run, feeds, _ = _prepare(model, rows, batch_size, "backend", 1)
    return stats_from_ns(time_feeds(run, feeds, runs=runs, warmup=warmup), batch_size)


def _prepare(model: LoadedModel, rows: Rows, batch: int, mode: str,
             threads: int) -> tuple[Callable[[Any], Any], list[Any], Callable[[], None]]:
    """The call to time, the inputs it cycles through (all built before timing), and how to
    close what serves it."""
    count = max(1, min(MAX_FEEDS, math.ceil(n_rows(rows) / batch)))
    chunks = [take_rows(rows, i * batch, batch) for i in range(count)]
    if mode == "backend":
        feeds = []
        for i, chunk in enumerate(chunks):
            try:
                feeds.append(model.adapter.feeds_batch(chunk)[0])
            except InvalidInput as exc:
                raise InvalidInput(f"input rows {i * batch}..{i * batch + batch - 1}: {exc}") from exc
        return model.backend.run, feeds, model.close
    from edge_runtime.options import RuntimeOptions
    from edge_runtime.runtime import Runtime

    # the Runtime a user gets from edge_runtime.load with default options (drift, metrics, ...)
    rt = Runtime(model, RuntimeOptions(backend=model.manifest.backend, threads=threads),
                 artifact_path=model.path)
    if batch == 1:
        single = [c[0] for c in chunks]
        return rt.predict, single, rt.close
    return rt.predict_batch, chunks, rt.close


def _predict_all(model: LoadedModel, rows: Rows) -> tuple[list[Any], np.ndarray | None]:
    values: list[Any] = []
    probas: list[np.ndarray] = []
    n = n_rows(rows)
    for start in range(0, n, EVAL_CHUNK):
        chunk = take_rows(rows, start, min(EVAL_CHUNK, n - start))
        feeds, k = model.adapter.feeds_batch(chunk)
        outs = model.backend.run(feeds)
        model.decoder.check(outs, k)
        v, p = model.decoder.decode(outs)
        values.extend(v)
        if p is not None:
            probas.append(np.asarray(p))
    return values, (np.concatenate(probas) if probas else None)


# -- one artifact per process (--isolate) ----------------------------------------------------

def _run_isolated(path: str | Path, rows: Rows, settings: BenchSettings, progress: bool) -> ArtifactRun:
    """Run ``run_artifact`` in a fresh interpreter so its RSS and peak are the artifact's own."""
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        rows_file = Path(tmp) / ("rows.npy" if isinstance(rows, np.ndarray) else "rows.json")
        if isinstance(rows, np.ndarray):
            np.save(rows_file, rows, allow_pickle=False)
        else:
            rows_file.write_text(json.dumps(rows, default=_json_default))
        spec = {"artifact": str(path), "rows_file": str(rows_file), "settings": settings.to_dict(),
                "progress": progress}
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        proc = subprocess.run([sys.executable, "-m", "edge_runtime.bench.worker"], input=json.dumps(spec),
                              stdout=subprocess.PIPE, stderr=None, text=True, env=env, check=False)
    try:
        out = json.loads(proc.stdout)
    except ValueError:
        raise EdgeRuntimeError(f"the benchmark process for {path} exited with code {proc.returncode} "
                               "without a result; see the messages above") from None
    if "error" in out:
        err = out["error"]
        if err.get("kind") == "model":
            raise ModelLoadError(err["path"], err["reason"], hint=err.get("hint"))
        if err.get("kind") == "input":
            raise InvalidInput(err["message"])
        raise EdgeRuntimeError(err["message"])
    return ArtifactRun(measurements=[Measurement.from_dict(m) for m in out["measurements"]],
                       values=out["values"], proba=None if out["proba"] is None else np.asarray(out["proba"]),
                       task=out["task"], notes=list(out.get("notes", [])))


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"{type(v).__name__} is not JSON serializable")
