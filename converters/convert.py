"""The conversion pipeline: resolve, load, export, quantize, measure, choose, write."""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from converters import (
    artifact,
    data,
    parity,
    reference,
    tflite_quantize,  # noqa: F401  (registers the tflite quantizers)
)
from converters.flavors import load_source_model
from converters.quantize import Candidate, select
from converters.quantizers import DEFAULT_TIMEOUT_S, MODES, NotApplicable, QuantContext, modes_for, quantizer
from converters.source import FeatureHint, ModelSource, resolve
from edge_runtime.errors import ConversionError, EdgeRuntimeError, UnsupportedModel
from edge_runtime.manifest import Manifest

log = logging.getLogger(__name__)

FORMATS = ("onnx", "tflite")
SMOKE_ROWS = 5
LATENCY_ROUNDS = 3  # candidates are timed in turns and keep their best round: fair under load
CALIBRATION_BATCH = 16
CALIBRATION_MAX_ROWS = 512


@dataclass
class ConversionReport:
    """What a conversion produced and measured."""

    out: Path
    manifest: Manifest
    mode: str
    parity: dict[str, Any]
    candidates: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _check_args(fmt: str, quantize: str, max_drop: float, n_features: int | None) -> None:
    if fmt not in FORMATS:
        raise ConversionError(f"unknown --format {fmt!r}", hint="Use one of: " + ", ".join(FORMATS))
    if quantize not in MODES:
        raise ConversionError(f"unknown --quantize {quantize!r}", hint="Use one of: " + ", ".join(MODES))
    if not (0.0 <= max_drop < 1.0) or math.isnan(max_drop):
        raise ConversionError(f"--max-accuracy-drop {max_drop} is out of range",
                              hint="Give a fraction such as 0.01 (one percent)")
    if n_features is not None and n_features < 1:
        raise ConversionError(f"--n-features {n_features} must be a positive number of features")


def _rows(src: ModelSource, model: Any, calibration_data: str | Path | None) -> data.Rows:
    names, types = tuple(model.feature_names), tuple(model.feature_types)
    if calibration_data is not None:
        df = data.conform(data.read_table(calibration_data, names), names, types, "--calibration-data")
        return data.split(df, "calibration-data")
    if model.sample is not None:
        return data.split(data.conform(model.sample, names, types, "--sample-data"), "sample-data")
    ex = data.example_frame(src.input_example, names)
    base = None
    if ex is not None:
        try:
            base = data.conform(ex, names, types, "the MLflow input example")
        except ConversionError as exc:
            log.warning("input example unusable: %s", exc)
    if base is not None and len(base) >= data.MIN_SPLIT_ROWS:
        return data.split(base, "input-example")
    import pandas as pd

    synth = data.synthesize(base, names, types, data.SYNTHETIC_ROWS)
    df = synth if base is None else pd.concat([base, synth], ignore_index=True)
    return data.split(data.conform(df, names, types, "synthesized rows"),
                      "synthetic" if base is None else "input-example+synthetic")


def _calibration_feeds(manifest: Manifest, rows: Any) -> list[dict[str, np.ndarray]]:
    from edge_runtime.inputs import InputAdapter

    adapter = InputAdapter(manifest)
    rows = rows.head(CALIBRATION_MAX_ROWS)
    return [adapter.feeds_batch(rows.iloc[i:i + CALIBRATION_BATCH])[0]
            for i in range(0, len(rows), CALIBRATION_BATCH)]


def _version(src: ModelSource, override: str | None) -> str:
    if override:
        return override
    if src.registered_version:
        return src.registered_version
    ts = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    return f"{src.run_id[:8]}-{ts}" if src.run_id else f"local-{ts}"


def _plain_row(values: list[Any]) -> list[Any]:
    return [v.item() if hasattr(v, "item") else v for v in values]


def _smoke(runtime: Any, model: Any, rows: Any) -> dict[str, Any]:
    """Five rows with a clear answer (classifiers: the widest top-2 probability margin,
    covering as many classes as possible), and the artifact's own outputs for them."""
    clean = rows[~rows.isna().any(axis=1)].reset_index(drop=True)
    if len(clean) == 0:
        return {}
    preds = parity.predict_rows(runtime, clean)
    order = list(range(len(clean)))
    if model.task == "classification" and preds[0].probabilities is not None:
        margins = []
        for p in preds:
            top = sorted(p.probabilities.values(), reverse=True)
            margins.append(top[0] - (top[1] if len(top) > 1 else 0.0))
        by_margin = sorted(order, key=lambda i: -margins[i])
        picked: list[int] = []
        seen: set[str] = set()
        for i in by_margin:  # first pass: one confident row per class
            if str(preds[i].value) not in seen:
                picked.append(i)
                seen.add(str(preds[i].value))
        picked = (picked[:SMOKE_ROWS] + [i for i in by_margin if i not in picked])[:SMOKE_ROWS]
    elif model.task == "regression":
        vals = np.array([np.mean(p.value) for p in preds])
        ranks = np.argsort(vals)
        picked = sorted({int(ranks[int(q * (len(ranks) - 1))]) for q in np.linspace(0.1, 0.9, SMOKE_ROWS)})
    else:
        picked = order[:SMOKE_ROWS]
    smoke_rows = [_plain_row(clean.iloc[i].tolist()) for i in picked]
    # the loader runs these rows as one batch: record what that batch gives
    batch = runtime.predict_batch(smoke_rows)
    out: dict[str, Any] = {"rows": smoke_rows, "values": [p.value for p in batch], "atol": 1e-3}
    if model.task == "classification" and batch[0].probabilities is not None:
        classes = list(runtime.manifest.classes)
        out["probabilities"] = [[float(p.probabilities[c]) for c in classes] for p in batch]
    return out


def _source_info(src: ModelSource, model: Any, exported: Any) -> dict[str, Any]:
    libs = {**model.libraries, **exported.libraries}
    info: dict[str, Any] = {"uri": src.uri, "run_id": src.run_id, "flavor": model.flavor,
                            "model_class": model.model_class, "libraries": libs}
    if src.registered_name:
        info["registered_model"] = {"name": src.registered_name, "version": src.registered_version}
    if src.mlflow_version:
        info["logged_with_mlflow"] = src.mlflow_version
    return info


def convert(source: str | Path, *, format: str = "onnx", quantize: str = "none", out: str | Path,
            calibration_data: str | Path | None = None, max_accuracy_drop: float = 0.01,
            tracking_uri: str | None = None, name: str | None = None, version: str | None = None,
            n_features: int | None = None, sample_data: str | Path | None = None,
            candidate_timeout: float = DEFAULT_TIMEOUT_S, tflite_int8_io: bool = False) -> ConversionReport:
    """Convert an MLflow model to a verified artifact directory at ``out``.

    ``tflite_int8_io``: with ``--format tflite --quantize static``, make the model's inputs and
    outputs int8 too (the LiteRT backend still takes and returns floats).

    >>> convert("models:/iris/3", format="onnx", quantize="auto", out="artifacts/iris")  # doctest: +SKIP
    """
    _check_args(format, quantize, max_accuracy_drop, n_features)
    src = resolve(str(source), tracking_uri)
    try:
        hint = FeatureHint(n_features, Path(sample_data) if sample_data else None)
        model = load_source_model(src, hint)
        if format not in model.exporters:
            raise UnsupportedModel(f"--format {format} for {model.flavor} model {model.model_class}",
                                   supported=list(model.exporters))
        rows = _rows(src, model, calibration_data)
        with tempfile.TemporaryDirectory(prefix="edge-convert-") as tmp:
            return _convert(src, model, rows, Path(tmp), fmt=format, quantize=quantize, out=Path(out),
                            max_drop=max_accuracy_drop, name=name, version=version, timeout=candidate_timeout,
                            options={"tflite_int8_io": tflite_int8_io})
    finally:
        src.cleanup()


def _convert(src: ModelSource, model: Any, rows: data.Rows, work: Path, *, fmt: str, quantize: str, out: Path,
             max_drop: float, name: str | None, version: str | None, timeout: float,
             options: dict[str, Any] | None = None) -> ConversionReport:
    from edge_runtime.model import LoadedModel
    from edge_runtime.options import RuntimeOptions
    from edge_runtime.runtime import Runtime

    (work / "fp32").mkdir()
    exported = model.exporters[fmt](work / "fp32")
    name = name or src.default_name
    version = _version(src, version)
    source_info = _source_info(src, model, exported)
    draft = artifact.build_manifest(exported.path, name=name, version=version, exported=exported, model=model,
                                    source=source_info)
    calibration = _calibration_feeds(draft, rows.calibration)
    auto = quantize == "auto"
    modes = ["none", *(m for m in ("fp16", "dynamic", "static") if m in _available(fmt))] if auto else [quantize]
    candidates: list[Candidate] = []
    loaded: dict[str, tuple[Candidate, Any, Path]] = {}
    notes: list[str] = []
    try:
        for mode in modes:
            cand = Candidate(mode)
            candidates.append(cand)
            cdir = work / f"q-{mode}"
            cdir.mkdir()
            ctx = QuantContext(fp32=exported.path, model=model, exported=exported, calibration=calibration,
                               timeout_s=timeout, options=dict(options or {}))
            try:
                path = quantizer(fmt, mode)(ctx, cdir)
                cand.notes = list(ctx.notes)
                manifest = artifact.build_manifest(path, name=name, version=version, exported=exported,
                                                   model=model, source=source_info, quantization={"mode": mode})
                lm = LoadedModel.open(artifact.stage(path, manifest, work))
            except NotApplicable as exc:
                if not auto:
                    raise ConversionError(f"--quantize {mode} does not apply to {model.model_class}: {exc}",
                                          hint="Use --quantize none, or auto to try every mode") from exc
                cand.reason = f"not applicable: {exc}"
                continue
            except EdgeRuntimeError as exc:
                if not auto:
                    raise ConversionError(f"--quantize {mode} failed for {model.model_class}: {exc}",
                                          hint="Use --quantize none, or auto to try every mode") from exc
                cand.reason = f"failed: {exc}"
                continue
            cand.size_bytes = manifest.size_bytes
            loaded[mode] = (cand, lm, path)
            result = parity.measure(Runtime(lm, RuntimeOptions()), model, rows.holdout, max_drop)
            cand.agreement, cand.drop, cand.max_abs_diff = result["agreement"], result["drop"], result["max_abs_diff"]
            cand.path = path
            if not auto:
                cand.p50_ms, cand.mean_ms = parity.latency(lm, rows.holdout)
                if not result["passed"]:
                    raise ConversionError(f"parity gate failed for --quantize {mode}: {parity.describe(result)}",
                                          hint="Try --quantize none or auto, or raise --max-accuracy-drop")
                cand.kept = cand.chosen = True
                cand.reason = "requested mode; parity passed"
        if auto:
            for _ in range(LATENCY_ROUNDS):
                for cand, lm, _path in loaded.values():
                    p50, mean = parity.latency(lm, rows.holdout)
                    cand.p50_ms = p50 if cand.p50_ms is None else min(cand.p50_ms, p50)
                    cand.mean_ms = mean if cand.mean_ms is None else min(cand.mean_ms, mean)
            chosen = select(candidates, max_drop)
        else:
            chosen = candidates[0]
        _, lm, path = loaded[chosen.mode]
        rt = Runtime(lm, RuntimeOptions())
        par = parity.measure(rt, model, rows.holdout, max_drop)
        par.update(rows_source=rows.origin, overlaps_calibration=rows.overlap)
        if rows.origin in ("synthetic", "input-example+synthetic"):
            notes.append(f"parity and calibration ran on {rows.origin} rows; pass --calibration-data FILE "
                         "with real rows for a stronger check")
        smoke = _smoke(rt, model, rows.holdout)
        cal_preds = [p.value for p in parity.predict_rows(rt, rows.calibration)]
        ref = reference.build(rows.calibration, model.feature_names, model.feature_types, model.task, cal_preds)
        quant: dict[str, Any] = {"mode": chosen.mode, "requested": quantize,
                 "calibration_rows": int(min(len(rows.calibration), CALIBRATION_MAX_ROWS))
                 if chosen.mode == "static" else 0,
                 "candidates": [c.to_dict() for c in candidates]}
        if chosen.notes:
            quant["notes"] = chosen.notes
        manifest = artifact.build_manifest(path, name=name, version=version, exported=exported, model=model,
                                           source=source_info, quantization=quant, parity=par, smoke=smoke,
                                           reference=ref)
    finally:
        for _, lm, _ in loaded.values():
            lm.close()
    final = artifact.write(out, path, manifest)
    log.info("wrote %s (%s, %d bytes)", final, chosen.mode, manifest.size_bytes)
    return ConversionReport(out=final, manifest=manifest, mode=chosen.mode, parity=par,
                            candidates=list(quant["candidates"]), notes=notes)


def _available(fmt: str) -> list[str]:

    return modes_for(fmt)
