"""PyTorch modules (MLflow ``pytorch`` flavor) -> ONNX with a dynamic batch axis.

The input shape comes from the MLflow signature (a tensor spec such as ``[-1, 4]`` or
``[-1, 1, 8, 8]``) or, failing that, from the input example; the artifact takes flat float32
rows (``x{i}`` in C order) and reshapes them in the graph. A classifier is a module whose last
layer is ``Softmax`` (classes ``0..k-1``), ``LogSoftmax`` (exponentiated in the graph) or a
one-unit ``Sigmoid`` (``[1 - p, p]``); anything else is a regressor, so a classifier that
returns logits should be logged with its Softmax.

Export uses ``torch.onnx.export(..., dynamo=False)``, the TorchScript exporter: the dynamo
exporter needs onnxscript, which this project does not depend on.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converters.flavors import Exported, Exporter, register
from converters.flavors.common import ScoresModel, flat_features, output_specs, versions
from converters.source import FeatureHint, ModelSource
from edge_runtime.errors import ConversionError, UnsupportedModel

log = logging.getLogger(__name__)

ONNX_OPSET = 17
MIN_ONNXRUNTIME = "1.13"
EXTRA_HINT = "pip install 'edge-convert[torch]' (torch CPU)"


def _input_shape(source: ModelSource) -> tuple[int, ...] | None:
    """The per-row input shape from the signature, else the input example."""
    try:
        from mlflow.models import Model

        sig = Model.load(str(source.local_path / "MLmodel")).signature
        if sig is not None and sig.inputs is not None and sig.inputs.is_tensor_spec():
            specs = sig.inputs.inputs
            if len(specs) == 1 and len(specs[0].shape) >= 2 and all(d > 0 for d in specs[0].shape[1:]):
                return tuple(int(d) for d in specs[0].shape[1:])
    except Exception as exc:  # an unreadable signature falls back to the example
        log.info("signature unusable for the input shape: %s", exc)
    ex = source.input_example
    if isinstance(ex, dict) and len(ex) == 1:
        ex = next(iter(ex.values()))
    if ex is not None:
        arr = np.asarray(ex.to_numpy() if hasattr(ex, "to_numpy") else ex)
        if arr.ndim >= 2:
            return tuple(int(d) for d in arr.shape[1:])
        if arr.ndim == 1:
            return (int(arr.shape[0]),)
    if source.columns is not None:
        return (len(source.columns),)
    return None


def _last_op(module: Any) -> str:
    """Lower-case name of the module's final operation: a torch.export graph's last call, or the
    last leaf module of an eager one."""
    graph = getattr(module, "graph", None)
    if graph is not None:
        for node in graph.nodes:
            if node.op == "output":
                arg = node.args[0]
                while isinstance(arg, (tuple, list)) and len(arg) == 1:
                    arg = arg[0]
                return str(getattr(arg, "target", "")).lower()
    last = None
    for m in module.modules():
        if not list(m.children()):
            last = m
    return type(last).__name__.lower() if last is not None else ""


def _head(module: Any, shape: tuple[int, ...]) -> tuple[str, tuple[Any, ...] | None, str]:
    """(task, classes, head) where head is softmax | logsoftmax | sigmoid | none."""
    import torch

    with torch.no_grad():
        width = int(module(torch.zeros(1, *shape)).reshape(1, -1).shape[1])
    op = _last_op(module)
    if ("log_softmax" in op or "logsoftmax" in op) and width >= 2:
        return "classification", tuple(range(width)), "logsoftmax"
    if "softmax" in op and width >= 2:
        return "classification", tuple(range(width)), "softmax"
    if "sigmoid" in op and width == 1:
        return "classification", (0, 1), "sigmoid"
    return "regression", None, "none"


def _eval_mode(module: Any) -> Any:
    """MLflow 3 loads a torch.export'ed model as a graph module that refuses train()/eval(),
    which torch.onnx.export calls; a plain GraphModule over the same graph accepts them."""
    try:
        return module.eval()
    except NotImplementedError:
        import torch.fx

        return torch.fx.GraphModule(module, module.graph).eval()


@dataclass
class TorchModel(ScoresModel):
    module: Any
    task: str
    classes: tuple[Any, ...] | None
    head: str
    feature_names: tuple[str, ...]
    feature_types: tuple[str, ...]
    input_shape: tuple[int, ...]
    model_class: str
    sample: Any = None
    flavor: str = "pytorch"
    missing_ok: tuple[str, ...] = ()
    tree_ensemble: bool = False
    libraries: dict[str, str] = field(default_factory=lambda: versions("torch", "mlflow", "onnx"))
    exporters: dict[str, Exporter] = field(default_factory=dict)
    _wrapped: Any = None

    def __post_init__(self) -> None:
        self.exporters = {"onnx": self.export_onnx}

    def wrapped(self) -> Any:
        """The module behind a flat float32 input, probabilities or values out."""
        if self._wrapped is None:
            import torch

            inner, shape, head = self.module, self.input_shape, self.head

            class Flat(torch.nn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    self.inner = inner

                def forward(self, x: torch.Tensor) -> torch.Tensor:
                    y = self.inner(x.reshape(-1, *shape))
                    if head == "logsoftmax":
                        y = torch.exp(y)
                    elif head == "sigmoid":
                        y = torch.cat([1.0 - y, y], dim=1)
                    return y.reshape(y.shape[0], -1)

            self._wrapped = Flat().eval()
        return self._wrapped

    def _raw(self, rows: Any) -> np.ndarray:
        import torch

        x = np.asarray(rows.to_numpy() if hasattr(rows, "to_numpy") else rows, dtype=np.float32)
        with torch.no_grad():
            return np.asarray(self.wrapped()(torch.from_numpy(x)).numpy(), dtype=np.float64)

    def export_onnx(self, out_dir: Path) -> Exported:
        import torch

        path = Path(out_dir) / "model.onnx"
        out_name = "probabilities" if self.task == "classification" else "value"
        x = torch.zeros(1, len(self.feature_names), dtype=torch.float32)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
                torch.onnx.export(self.wrapped(), (x,), str(path), input_names=["input"], output_names=[out_name],
                                  dynamic_axes={"input": {0: "batch"}, out_name: {0: "batch"}},
                                  opset_version=ONNX_OPSET, dynamo=False)
        except Exception as exc:  # torch raises many kinds for unsupported operators
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConversionError(f"torch.onnx.export failed for {self.model_class}: {first}") from exc
        n_out = len(self.classes) if self.classes else int(self._raw(np.zeros((1, len(self.feature_names)))).shape[1])

        ins, outs = output_specs(path, "onnx", self.task, n_out)
        return Exported(path=path, backend="onnx", inputs=ins, outputs=outs, requires={"onnxruntime": MIN_ONNXRUNTIME},
                        libraries=self.libraries)


def load(source: ModelSource, hint: FeatureHint) -> TorchModel:
    try:
        import mlflow.pytorch
        import torch  # noqa: F401
    except ImportError as exc:
        raise ConversionError("converting a PyTorch model needs torch", hint=EXTRA_HINT) from exc
    try:
        module = mlflow.pytorch.load_model(str(source.local_path), map_location="cpu")
    except Exception as exc:  # pickle / torch.load errors of every kind
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConversionError(f"cannot load the PyTorch model in {source.uri}: {first}") from exc
    module = _eval_mode(module)
    shape = _input_shape(source)
    if shape is None and hint.n_features:
        shape = (hint.n_features,)
    if shape is None:
        raise ConversionError(f"{source.uri} was logged without a signature or input example, so the "
                              "input shape is unknown", hint="Log it with input_example=, or pass --n-features N "
                              "for a flat input")
    try:
        task, classes, head = _head(module, shape)
    except Exception as exc:  # a wrong shape makes the forward pass fail
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConversionError(f"the PyTorch model does not run on input shape {shape}: {first}",
                              hint="Log it with a signature or input example of the real input shape") from exc
    feats = flat_features(source, hint, math.prod(shape))
    if len(feats.names) != math.prod(shape):
        raise UnsupportedModel(f"PyTorch input of shape {shape} with {len(feats.names)} named features",
                               hint="Log the model with a tensor signature")
    return TorchModel(module=module, task=task, classes=classes, head=head, feature_names=feats.names,
                      feature_types=("float",) * len(feats.names), input_shape=shape,
                      model_class=type(module).__name__, sample=feats.sample)


register("pytorch", load)
