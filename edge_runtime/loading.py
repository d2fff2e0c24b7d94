"""``edge_runtime.load``: an artifact directory or a device config to a serving Runtime."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edge_runtime.config import load_config
from edge_runtime.errors import ConfigError, ModelLoadError
from edge_runtime.model import LoadedModel
from edge_runtime.options import RuntimeOptions, backend_options
from edge_runtime.runtime import Runtime
from edge_runtime.store import resolve_artifact

log = logging.getLogger(__name__)


def load(path: str | Path | None = None, *, config: str | Path | None = None, **options: Any) -> Runtime:
    """Load an artifact directory and return a Runtime.

    Verifies the model file against the manifest, opens the backend, and runs the smoke
    test before returning. If that fails and a fallback is configured, the Runtime still
    starts and answers from the fallback (``health()["ready"]`` is False with the reason);
    without a fallback the ``ModelLoadError`` is raised. ``config=`` loads the model a device
    config means (the store's active version once an agent has installed one; see
    ``edge_runtime.store.resolve_artifact``) with the config's ``[runtime]`` options.
    """
    if config is not None:
        cfg = load_config(config)
        path = path or resolve_artifact(cfg.device.data_dir, cfg.model.artifact)
        options = {**cfg.runtime_options(), **options}
    if path is None:
        raise ConfigError("load() needs an artifact directory or config=")
    opts = RuntimeOptions.from_kwargs(**options)
    try:
        model = LoadedModel.open(path, backend_options(opts), opts.backend)
    except ModelLoadError as exc:
        if opts.fallback_default is None and not opts.fallback_artifact:
            raise  # nothing could answer (a last-good store starts empty)
        rt = Runtime(None, opts, load_error=exc, artifact_path=path)
        fb = rt.services.fallback
        if fb.default is None and fb.secondary is None:
            rt.close()  # the fallback artifact failed to load too
            raise
        log.error("serving from the fallback: %s", exc)
        return rt
    return Runtime(model, opts, artifact_path=path)
