"""Build the manifest and write the artifact directory atomically.

The directory is assembled in a temporary directory beside ``--out``, loaded once more
through ``edge_runtime.load`` (hash check and smoke test, as a device will), and only then
renamed into place, so ``--out`` never holds a half-written or failing artifact.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_runtime.errors import ConversionError, EdgeRuntimeError
from edge_runtime.manifest import MANIFEST_FILE, Manifest, sha256_file, write_manifest

log = logging.getLogger(__name__)


def _plain(v: Any) -> Any:
    """JSON-safe scalars (numpy types -> Python)."""
    if hasattr(v, "item") and not isinstance(v, (list, tuple, dict)):
        return v.item()
    return v


def build_manifest(model_file: Path, *, name: str, version: str, exported: Any, model: Any,
                   source: dict[str, Any], **sections: Any) -> Manifest:
    """A manifest for ``model_file`` (an exported or quantized file) and its source model."""
    return Manifest(
        name=name, version=version, backend=exported.backend, file=model_file.name,
        sha256=sha256_file(model_file), size_bytes=model_file.stat().st_size, task=model.task,
        inputs=exported.inputs, outputs=exported.outputs, feature_names=tuple(model.feature_names),
        feature_types=tuple(model.feature_types), input_layout=exported.input_layout,
        classes=None if model.classes is None else tuple(_plain(c) for c in model.classes),
        created_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        source=source, requires=dict(exported.requires),
        extra={"missing_ok": list(model.missing_ok)} if model.missing_ok else {},
        **sections,
    )


def stage(model_file: Path, manifest: Manifest, workdir: Path) -> Path:
    """A loadable artifact directory under ``workdir`` (for measuring a candidate)."""
    d = Path(tempfile.mkdtemp(prefix="candidate-", dir=workdir))
    shutil.copyfile(model_file, d / manifest.file)
    write_manifest(d, manifest)
    return d


def write(out: Path, model_file: Path, manifest: Manifest) -> Path:
    """Write the final artifact to ``out`` atomically; returns ``out``."""
    import edge_runtime

    out = Path(out).expanduser().absolute()
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / MANIFEST_FILE).is_file())):
        raise ConversionError(f"--out {out} exists and is not an artifact directory",
                              hint="Pick a new directory, or remove it first")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        shutil.copyfile(model_file, tmp / manifest.file)
        with open(tmp / manifest.file, "rb+") as f:
            os.fsync(f.fileno())
        write_manifest(tmp, manifest)
        try:
            edge_runtime.load(tmp).close()  # verify + smoke test, as the device will
        except EdgeRuntimeError as exc:
            raise ConversionError(f"the finished artifact does not load in edge_runtime: {exc}") from exc
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.rename(out, old)
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
