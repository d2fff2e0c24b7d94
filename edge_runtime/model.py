"""One loaded artifact: verified manifest, open backend, input adapter, output decoder.

``LoadedModel.open`` does everything that can fail (hash check, backend load, tensor check,
smoke test) before anything serves from it, so a swap to a new model is a single reference
change once ``open`` has returned.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.backends import Backend, BackendOptions, open_backend
from edge_runtime.errors import EdgeRuntimeError, ModelLoadError
from edge_runtime.inputs import InputAdapter, all_finite
from edge_runtime.manifest import Manifest, verify_artifact

log = logging.getLogger(__name__)
_isfinite = math.isfinite


class OutputDecoder:
    """Maps backend outputs to (value, probability row) using the manifest's output roles."""

    def __init__(self, manifest: Manifest, backend: Backend) -> None:
        names = [o.name for o in backend.outputs()]
        by_role = {o.role: o.name for o in manifest.outputs}

        def index(role: str) -> int | None:
            name = by_role.get(role)
            if name is None:
                return None
            if name not in names:
                raise ModelLoadError(manifest.name, f"manifest output {name!r} ({role}) is not an output "
                                     f"of the model file (it has {', '.join(names)})")
            return names.index(name)

        self.classification = manifest.task == "classification"
        self.classes = manifest.classes
        self.n_outputs = len(names)
        self.label = index("label")
        self.proba = index("probabilities")
        self.value = index("value")
        if self.classification and self.label is None and self.proba is None:
            raise ModelLoadError(manifest.name, "a classifier artifact needs a 'label' or 'probabilities' output")
        if not self.classification and self.value is None:
            raise ModelLoadError(manifest.name, "a regression artifact needs a 'value' output")
        self._classes_arr = np.asarray(self.classes, dtype=object) if self.classes else None
        # static trailing dimensions the manifest promises per output index (a model returning
        # [N, 0] or [N, 3] for a [N, 1] output is broken, not a valid answer)
        spec_by_name = {o.name: o for o in manifest.outputs}
        self._widths = {}
        for i, name in enumerate(names):
            spec = spec_by_name.get(name)
            if spec is not None and len(spec.shape) >= 2 and all(d is not None for d in spec.shape[1:]):
                self._widths[i] = tuple(spec.shape[1:])
        self._used = [i for i in (self.label, self.proba, self.value) if i is not None]
        self._width = len(self.classes) if self.classes and self.proba is not None else None

    def check(self, outs: list[np.ndarray], n: int) -> None:
        """Raise ValueError when outputs are not what this model should return for n rows:
        wrong count, wrong number of rows or classes, NaN or Inf."""
        if len(outs) != self.n_outputs:
            raise ValueError(f"expected {self.n_outputs} outputs, got {len(outs)}")
        for i in self._used:
            a = outs[i]
            if a.shape[0] != n:
                raise ValueError(f"output {i} has {a.shape[0]} rows for {n} inputs")
            want = self._widths.get(i)
            if want is not None and a.ndim > 1 and a.shape[1:] != want:
                raise ValueError(f"output {i} has shape {a.shape[1:]} per row, expected {want}")
            if a.dtype.kind == "f" and not all_finite(a):
                raise ValueError(f"output {i} contains NaN or Inf")
        if self._width is not None and outs[self.proba].shape[-1] != self._width:  # type: ignore[index]
            raise ValueError(f"probabilities have {outs[self.proba].shape[-1]} columns for "  # type: ignore[index]
                             f"{self._width} classes")

    def one(self, outs: list[np.ndarray]) -> tuple[Any, list[float] | None]:
        """(value, probabilities as a list or None) for a single-row call, with the checks of
        ``check`` done in the same pass; this is the hot path of every ``predict``."""
        if len(outs) != self.n_outputs:
            raise ValueError(f"expected {self.n_outputs} outputs, got {len(outs)}")
        if self.classification:
            plist = None
            if self.proba is not None:
                pa = outs[self.proba]
                if pa.shape[0] != 1 or (self._width is not None and pa.shape[-1] != self._width):
                    raise ValueError(f"probabilities have shape {pa.shape}, expected (1, {self._width})")
                plist = pa.reshape(-1).tolist()
                if not all(map(_isfinite, plist)):
                    raise ValueError("probabilities contain NaN or Inf")
            if self.label is not None:
                la = outs[self.label]
                if la.shape[0] != 1:
                    raise ValueError(f"label output has {la.shape[0]} rows for 1 input")
                return la.item(0), plist
            assert plist is not None and self.classes is not None
            return self.classes[plist.index(max(plist))], plist
        v = outs[self.value]  # type: ignore[index]
        want = self._widths.get(self.value)  # type: ignore[arg-type]
        if v.shape[0] != 1 or (want is not None and v.ndim > 1 and v.shape[1:] != want):
            raise ValueError(f"output has shape {v.shape}, expected (1, {want})")
        vals = v.reshape(-1).tolist()
        if not all(map(_isfinite, vals)):
            raise ValueError("output contains NaN or Inf")
        return (vals[0] if len(vals) == 1 else vals), None

    def batch(self, outs: list[np.ndarray], n: int) -> tuple[list[Any], np.ndarray | None]:
        """``check`` then ``decode``: a batch's outputs as values and probabilities."""
        self.check(outs, n)
        return self.decode(outs)

    def decode(self, outs: list[np.ndarray]) -> tuple[list[Any], np.ndarray | None]:
        """Values for every row, and the probability matrix (classifiers) or None."""
        if self.classification:
            proba = outs[self.proba] if self.proba is not None else None
            if self.label is not None:
                values = outs[self.label].reshape(-1).tolist()
            else:
                assert proba is not None and self._classes_arr is not None
                values = self._classes_arr[np.argmax(proba, axis=1)].tolist()
            return values, proba
        assert self.value is not None
        v = outs[self.value]
        if v.ndim == 1 or v.shape[1] == 1:
            return v.reshape(-1).astype(float).tolist(), None
        return v.astype(float).tolist(), None


@dataclass
class LoadedModel:
    path: Path
    manifest: Manifest
    backend: Backend
    adapter: InputAdapter
    decoder: OutputDecoder
    load_ms: float
    smoke_ok: bool
    backend_ms: float = 0.0  # the part of load_ms spent opening the backend session

    @property
    def version(self) -> str:
        return self.manifest.version

    @classmethod
    def open(cls, path: str | Path, options: BackendOptions | None = None,
             backend: str | None = None, smoke: bool = True) -> LoadedModel:
        """Verify, load and smoke-test an artifact; raise ModelLoadError on any failure."""
        t0 = time.perf_counter()
        path = Path(path)
        manifest = verify_artifact(path)
        name = manifest.backend if backend in (None, "auto") else backend
        if name != manifest.backend:
            raise ModelLoadError(path, f"config asks for backend {name!r} but the artifact is "
                                 f"{manifest.backend!r}", hint="Set backend = \"auto\" or convert "
                                 f"the model with --format {name}.")
        t_be = time.perf_counter()
        be = open_backend(name, path / manifest.file, options)
        backend_ms = (time.perf_counter() - t_be) * 1000
        try:
            _check_tensors(path, manifest, be)
            model = cls(path, manifest, be, InputAdapter(manifest), OutputDecoder(manifest, be),
                        0.0, False)
            if smoke and manifest.smoke:
                model.smoke_test()
                model.smoke_ok = True
        except BaseException:
            be.close()
            raise
        model.load_ms = (time.perf_counter() - t0) * 1000
        model.backend_ms = backend_ms
        log.info("loaded %s version %s (%s) in %.1f ms", manifest.name, manifest.version,
                 manifest.backend, model.load_ms)
        return model

    def smoke_test(self) -> None:
        """Run the manifest's smoke rows and compare with the outputs it promises."""
        smoke = self.manifest.smoke
        rows = smoke.get("rows") or []
        if not rows:
            return
        try:
            feeds, n = self.adapter.feeds_batch(rows)
            outs = self.backend.run(feeds)
            self.decoder.check(outs, n)
            values, proba = self.decoder.decode(outs)
        except (EdgeRuntimeError, ValueError) as exc:
            raise ModelLoadError(self.path, f"smoke test failed to run: {exc}",
                                 hint="The artifact does not work on this device's runtime.") from exc
        atol = float(smoke.get("atol", 1e-3))
        expected = smoke.get("values", [])
        for i, (got, want) in enumerate(zip(values, expected, strict=False)):
            if self.decoder.classification:
                ok = got == want or str(got) == str(want)
            else:
                ok = bool(np.allclose(got, want, atol=atol, rtol=1e-3))
            if not ok:
                raise ModelLoadError(self.path, f"smoke test row {i}: model gives {got!r}, manifest "
                                     f"expects {want!r}", hint="The model file and manifest disagree, "
                                     "or this runtime computes differently; re-convert or reinstall.")
        want_p = smoke.get("probabilities")
        if want_p is not None and proba is not None:
            diff = float(np.max(np.abs(np.asarray(proba, dtype=float) - np.asarray(want_p, dtype=float))))
            if diff > atol:
                raise ModelLoadError(self.path, f"smoke test probabilities differ by {diff:.2e} "
                                     f"(tolerance {atol:.0e})")

    def close(self) -> None:
        self.backend.close()


def _check_tensors(path: Path, manifest: Manifest, backend: Backend) -> None:
    have = {s.name: s for s in backend.inputs()}
    for spec in manifest.inputs:
        got = have.get(spec.name)
        if got is None:
            raise ModelLoadError(path, f"the model file has no input {spec.name!r} (it has "
                                 f"{', '.join(have)})", hint="The manifest does not belong to this model file.")
    if manifest.input_layout == "tensor":
        shape = manifest.inputs[0].shape
        if len(shape) == 2 and shape[1] is not None and shape[1] != manifest.n_features:
            raise ModelLoadError(path, f"input width {shape[1]} differs from {manifest.n_features} features")
