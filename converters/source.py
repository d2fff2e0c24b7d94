"""Resolve a SOURCE (``runs:/``, ``models:/name/version``, ``models:/name@alias`` or a local
directory with an ``MLmodel`` file) to a local copy and what its ``MLmodel`` says.

mlflow is imported inside the functions: ``import converters`` stays cheap.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.errors import ConversionError

log = logging.getLogger(__name__)

SOURCE_FORMS = ("runs:/<run_id>/<path>", "models:/<name>/<version>", "models:/<name>@<alias>",
                "a directory holding an MLmodel file")
# MLflow column types -> manifest feature types
_COL_TYPES = {"double": "float", "float": "float", "long": "int", "integer": "int", "boolean": "int",
              "string": "string", "datetime": "string", "binary": "string"}


@dataclass(frozen=True)
class FeatureHint:
    """What the user told us about features, for models logged without a signature."""

    n_features: int | None = None
    sample_data: Path | None = None


@dataclass
class ModelSource:
    uri: str
    local_path: Path
    flavors: dict[str, dict[str, Any]]
    run_id: str | None = None
    registered_name: str | None = None
    registered_version: str | None = None
    # (name, type) per column from the signature; None without a signature or for
    # an unnamed tensor signature (then ``tensor_width`` may say how many features)
    columns: list[tuple[str, str]] | None = None
    tensor_width: int | None = None
    input_example: Any = None  # DataFrame or ndarray, as MLflow stored it
    mlflow_version: str | None = None
    default_name: str = "model"
    _tmp: Any = field(default=None, repr=False)

    @property
    def has_signature(self) -> bool:
        return self.columns is not None or self.tensor_width is not None

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _unknown(source: str) -> ConversionError:
    return ConversionError(f"cannot resolve model source {source!r}",
                           hint="Pass " + ", ".join(SOURCE_FORMS[:-1]) + " or " + SOURCE_FORMS[-1])


def resolve(source: str, tracking_uri: str | None = None) -> ModelSource:
    """Download (if remote) and read the MLmodel file of ``source``."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    local = Path(source).expanduser()
    if "://" not in source and local.exists():
        if not local.is_dir() or not (local / "MLmodel").is_file():
            raise ConversionError(f"{source} has no MLmodel file",
                                  hint="Pass the directory MLflow saved the model into (it holds MLmodel).")
        return _read(source, local, None)
    m = re.fullmatch(r"(runs|models):/(.+)", source)
    if not m:
        if "://" not in source and ":" not in source:
            raise ConversionError(f"no such model directory: {source}",
                                  hint="Pass " + ", ".join(SOURCE_FORMS[:-1]) + " or an existing directory "
                                  "holding an MLmodel file")
        raise _unknown(source)

    import mlflow
    from mlflow.exceptions import MlflowException

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        mlflow.set_tracking_uri(uri)
    store = mlflow.get_tracking_uri()
    registered: tuple[str, str] | None = None
    try:
        if m.group(1) == "models":
            registered = _registered_version(m.group(2), source)
        tmp = tempfile.TemporaryDirectory(prefix="edge-convert-src-")
        path = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp.name)
    except ConversionError:
        raise
    except MlflowException as exc:
        raise ConversionError(f"model {source} not found in tracking store {store}: "
                              f"{str(exc).splitlines()[0]}",
                              hint="Check the run id / model name and --tracking-uri or MLFLOW_TRACKING_URI") \
            from exc
    except OSError as exc:
        raise ConversionError(f"cannot download {source} from {store}: {exc}") from exc
    local = Path(path)
    if not (local / "MLmodel").is_file():
        raise ConversionError(f"{source} is not an MLflow model (no MLmodel file in it)",
                              hint="Point at the model's artifact path, e.g. runs:/<run_id>/model")
    ms = _read(source, local, registered)
    ms._tmp = tmp
    return ms


def _registered_version(rest: str, source: str) -> tuple[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient()
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return name, str(client.get_model_version_by_alias(name, alias).version)
    if "/" in rest:
        name, version = rest.rsplit("/", 1)
        if version.isdigit():
            client.get_model_version(name, version)  # raises when missing
            return name, version
        if version.lower() == "latest":
            versions = client.search_model_versions(f"name='{name}'")
            if not versions:
                raise ConversionError(f"registered model {name!r} has no versions")
            return name, str(max(int(v.version) for v in versions))
    # models:/m-<id> (MLflow 3 logged-model ids) carry no registry version
    return rest, ""


def _read(source: str, local: Path, registered: tuple[str, str] | None) -> ModelSource:
    from mlflow.models import Model

    try:
        mlmodel = Model.load(str(local / "MLmodel"))
    except Exception as exc:  # MLflow raises assorted YAML/IO errors
        raise ConversionError(f"{local / 'MLmodel'} cannot be read: {str(exc).splitlines()[0]}") from exc
    columns: list[tuple[str, str]] | None = None
    width: int | None = None
    sig = mlmodel.signature
    if sig is not None and sig.inputs is not None:
        if sig.inputs.is_tensor_spec():
            specs = sig.inputs.inputs
            if len(specs) == 1 and len(specs[0].shape) == 2 and specs[0].shape[1] > 0:
                width = int(specs[0].shape[1])
        elif sig.inputs.has_input_names():
            columns = [(str(c.name), _COL_TYPES.get(getattr(c.type, "name", str(c.type)), "float"))
                       for c in sig.inputs.inputs]
    example = None
    try:
        example = mlmodel.load_input_example(str(local))
    except Exception as exc:  # a missing or unreadable example is not fatal
        log.info("input example not readable: %s", exc)
    name = registered[0] if registered and registered[1] else None
    default = name or (local.name if local.name not in ("", "artifacts") else "model")
    if default.startswith("m-") and not name:
        default = "model"
    return ModelSource(
        uri=source, local_path=local, flavors=dict(mlmodel.flavors), run_id=mlmodel.run_id,
        registered_name=name, registered_version=registered[1] if registered and registered[1] else None,
        columns=columns, tensor_width=width, input_example=example,
        mlflow_version=getattr(mlmodel, "mlflow_version", None), default_name=default,
    )
