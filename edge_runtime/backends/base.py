"""The one interface every inference backend implements."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from edge_runtime.manifest import TensorSpec


@dataclass(frozen=True)
class BackendOptions:
    """How to open a model file. Backends ignore what does not apply to them."""

    threads: int = 1  # intra-op threads; 0 lets the backend choose
    inter_op_threads: int = 1
    optimize: bool = True  # graph optimisations at load


@runtime_checkable
class Backend(Protocol):
    """Load a model file, describe its tensors, run a batch, close.

    ``run`` takes one array per input (already the input's dtype, batch first) and returns
    one array per output, in ``outputs()`` order. It raises only ``BackendError``.
    """

    name: str

    def inputs(self) -> list[TensorSpec]: ...

    def outputs(self) -> list[TensorSpec]: ...

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...

    def close(self) -> None: ...


# A backend may also offer ``bind_row() -> RowBinding | None``: for the calling thread, an input
# buffer of shape (1, n_features) and a function that runs the model on what the buffer holds and
# returns the outputs, in ``outputs()`` order, in buffers the next call on the same thread reuses
# (read them before calling again). The fused single-row predict path uses it; None, or no such
# method, means ``run`` is used instead.
RowBinding = tuple[np.ndarray, Callable[[], list[np.ndarray]]]


class BackendFactory(Protocol):
    def __call__(self, path: Path, options: BackendOptions) -> Backend: ...
