"""The artifact manifest: read, validate, verify, write.

An artifact is a directory holding the model file, ``manifest.json`` and optionally
``manifest.sig``. The manifest's ``sha256`` covers the model file, so signing the manifest
signs the model. Field reference: docs/ARTIFACT.md.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.errors import ArtifactIntegrityError, ModelLoadError

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
BACKENDS = ("onnx", "tflite", "fake")  # fake: tests and fault injection only
TASKS = ("classification", "regression")
# How feature values reach the model: one float tensor [N, F] in feature order ("tensor"),
# or one [N, 1] tensor per feature named after it ("columns", for pipelines over named,
# possibly string, columns).
INPUT_LAYOUTS = ("tensor", "columns")
FEATURE_TYPES = ("float", "int", "string")
# What each model output means to the runtime.
OUTPUT_ROLES = ("label", "probabilities", "value", "other")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: float32, int64, str, ...
    shape: tuple[int | None, ...]  # None for a dynamic dimension
    role: str = "other"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(
            name=str(d["name"]),
            dtype=str(d["dtype"]),
            shape=tuple(None if s is None else int(s) for s in d.get("shape", [])),
            role=str(d.get("role", "other")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "role": self.role}


@dataclass(frozen=True)
class Manifest:
    """Everything needed to load, check and trust an artifact."""

    name: str
    version: str
    backend: str
    file: str
    sha256: str
    size_bytes: int
    task: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    feature_names: tuple[str, ...]
    feature_types: tuple[str, ...]
    input_layout: str = "tensor"
    classes: tuple[Any, ...] | None = None
    created_at: str = ""
    format_version: int = FORMAT_VERSION
    source: dict[str, Any] = field(default_factory=dict)
    requires: dict[str, str] = field(default_factory=dict)  # runtime package -> minimum version
    quantization: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    smoke: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # unknown top-level keys, kept verbatim

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def output(self, role: str) -> TensorSpec | None:
        for spec in self.outputs:
            if spec.role == role:
                return spec
        return None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        extra = d.pop("extra")
        d["inputs"] = [s.to_dict() for s in self.inputs]
        d["outputs"] = [s.to_dict() for s in self.outputs]
        for key in ("feature_names", "feature_types"):
            d[key] = list(d[key])
        d["classes"] = None if self.classes is None else list(self.classes)
        d.update(extra)
        return d

    def to_json(self) -> bytes:
        """The canonical bytes written to manifest.json (and signed)."""
        return (json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n").encode()

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = "manifest") -> Manifest:
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        missing = [k for k in ("name", "version", "backend", "file", "sha256", "size_bytes", "task",
                               "inputs", "outputs", "feature_names") if k not in d]
        if missing:
            raise ModelLoadError(where, f"manifest.json lacks required keys: {', '.join(missing)}",
                                 hint="Re-run edge-convert to produce a complete artifact.")
        try:
            fv = int(d.get("format_version", FORMAT_VERSION))
            if fv > FORMAT_VERSION:
                raise ModelLoadError(where, f"manifest format_version {fv} is newer than this "
                                     f"runtime understands ({FORMAT_VERSION})",
                                     hint="Upgrade edge-runtime on this device.")
            names = tuple(str(n) for n in d["feature_names"])
            types = tuple(str(t) for t in d.get("feature_types") or ["float"] * len(names))
            m = cls(
                name=str(d["name"]),
                version=str(d["version"]),
                backend=str(d["backend"]),
                file=str(d["file"]),
                sha256=str(d["sha256"]).lower(),
                size_bytes=int(d["size_bytes"]),
                task=str(d["task"]),
                inputs=tuple(TensorSpec.from_dict(s) for s in d["inputs"]),
                outputs=tuple(TensorSpec.from_dict(s) for s in d["outputs"]),
                feature_names=names,
                feature_types=types,
                input_layout=str(d.get("input_layout", "tensor")),
                classes=None if d.get("classes") is None else tuple(d["classes"]),
                created_at=str(d.get("created_at", "")),
                format_version=fv,
                source=dict(d.get("source") or {}),
                requires=dict(d.get("requires") or {}),
                quantization=dict(d.get("quantization") or {}),
                parity=dict(d.get("parity") or {}),
                smoke=dict(d.get("smoke") or {}),
                reference=dict(d.get("reference") or {}),
                extra={k: v for k, v in d.items() if k not in known},
            )
        except (TypeError, ValueError, KeyError) as exc:
            raise ModelLoadError(where, f"manifest.json has a malformed field: {exc}",
                                 hint="Re-run edge-convert to produce a valid artifact.") from exc
        m._check(where)
        return m

    def _check(self, where: str) -> None:
        def bad(reason: str) -> ModelLoadError:
            return ModelLoadError(where, f"manifest.json: {reason}")

        if self.backend not in BACKENDS:
            raise bad(f"backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.task not in TASKS:
            raise bad(f"task {self.task!r} is not one of {', '.join(TASKS)}")
        if self.input_layout not in INPUT_LAYOUTS:
            raise bad(f"input_layout {self.input_layout!r} is not one of {', '.join(INPUT_LAYOUTS)}")
        if len(self.feature_types) != len(self.feature_names):
            raise bad("feature_types and feature_names differ in length")
        for t in self.feature_types:
            if t not in FEATURE_TYPES:
                raise bad(f"feature type {t!r} is not one of {', '.join(FEATURE_TYPES)}")
        if len(set(self.feature_names)) != len(self.feature_names):
            raise bad("feature_names has duplicates")
        if os.path.basename(self.file) != self.file or self.file in ("", ".", ".."):
            raise bad(f"file {self.file!r} must be a plain file name inside the artifact")
        if len(self.sha256) != 64:
            raise bad("sha256 is not a 64-character hex digest")
        if self.task == "classification" and not self.classes:
            raise bad("a classification artifact needs 'classes'")
        for spec in self.outputs:
            if spec.role not in OUTPUT_ROLES:
                raise bad(f"output {spec.name!r} has unknown role {spec.role!r}")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(artifact_dir: str | Path) -> Manifest:
    """Read and validate ``manifest.json`` without touching the model file."""
    d = Path(artifact_dir)
    mpath = d / MANIFEST_FILE
    if not d.is_dir():
        raise ModelLoadError(d, "no such artifact directory",
                             hint="Pass the directory edge-convert --out wrote.")
    if not mpath.is_file():
        raise ModelLoadError(d, f"no {MANIFEST_FILE} in the directory",
                             hint="Pass the directory edge-convert --out wrote.")
    try:
        raw = json.loads(mpath.read_bytes())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(d, f"{MANIFEST_FILE} is not valid JSON ({exc})",
                             hint="The file is damaged; copy the artifact again.") from exc
    if not isinstance(raw, dict):
        raise ModelLoadError(d, f"{MANIFEST_FILE} is not a JSON object")
    return Manifest.from_dict(raw, where=str(d))


def verify_artifact(artifact_dir: str | Path, manifest: Manifest | None = None) -> Manifest:
    """Read the manifest and check the model file's size and sha256 against it."""
    d = Path(artifact_dir)
    m = manifest or read_manifest(d)
    model = d / m.file
    if not model.is_file():
        raise ModelLoadError(d, f"model file {m.file!r} named by the manifest is missing",
                             hint="Copy the whole artifact directory again.")
    size = model.stat().st_size
    if size != m.size_bytes:
        raise ArtifactIntegrityError(d, "size", f"{m.size_bytes} bytes", f"{size} bytes")
    digest = sha256_file(model)
    if digest != m.sha256:
        raise ArtifactIntegrityError(d, "sha256", m.sha256[:16] + "…", digest[:16] + "…")
    return m


def write_manifest(artifact_dir: str | Path, manifest: Manifest) -> Path:
    """Write manifest.json atomically (temp file, fsync, rename)."""
    d = Path(artifact_dir)
    path = d / MANIFEST_FILE
    tmp = d / (MANIFEST_FILE + ".tmp")
    with open(tmp, "wb") as f:
        f.write(manifest.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
