"""Backend registry: the manifest's ``backend`` names which one opens the model file.

Each backend module registers its opener in its last lines; adding a backend touches that
module and one line in ``_MODULES``. Modules import their library lazily, inside the opener,
so a device without LiteRT can still import edge_runtime.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from edge_runtime.backends.base import Backend, BackendFactory, BackendOptions
from edge_runtime.errors import ModelLoadError

__all__ = ["Backend", "BackendOptions", "available", "open_backend", "register"]

_REGISTRY: dict[str, BackendFactory] = {}
# manifest backend name -> module that registers it
_MODULES = {"onnx": "edge_runtime.backends.onnx", "tflite": "edge_runtime.backends.litert",
            "fake": "edge_runtime.backends.fake"}


def register(name: str, factory: BackendFactory) -> None:
    if name in _REGISTRY:
        raise ValueError(f"backend {name!r} is already registered")
    _REGISTRY[name] = factory


def _factory(name: str) -> BackendFactory:
    if name not in _REGISTRY:
        module = _MODULES.get(name)
        if module is None:
            raise ModelLoadError(name, f"unknown backend {name!r}",
                                 hint=f"Known backends: {', '.join(sorted(_MODULES))}.")
        importlib.import_module(module)
    return _REGISTRY[name]


def available() -> list[str]:
    return sorted(_MODULES)


def open_backend(name: str, path: str | Path, options: BackendOptions | None = None) -> Backend:
    """Open ``path`` with the named backend."""
    return _factory(name)(Path(path), options or BackendOptions())
