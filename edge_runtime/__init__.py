"""edge_runtime: load verified model artifacts and serve predictions on small devices.

    import edge_runtime
    rt = edge_runtime.load("artifacts/churn")
    p = rt.predict({"tenure": 3, "charges": 70.5})
    p.value, p.probabilities, p.source, p.model_version, p.latency_ms
"""

from edge_runtime.errors import (
    ArtifactIntegrityError,
    BackendError,
    ConfigError,
    ConversionError,
    EdgeRuntimeError,
    InvalidInput,
    ModelLoadError,
    UnsupportedModel,
)
from edge_runtime.loading import load
from edge_runtime.manifest import Manifest, read_manifest, verify_artifact
from edge_runtime.options import RuntimeOptions
from edge_runtime.prediction import Prediction, PredictionBatch
from edge_runtime.runtime import Runtime
from edge_runtime.version import __version__

__all__ = [
    "ArtifactIntegrityError",
    "BackendError",
    "ConfigError",
    "ConversionError",
    "EdgeRuntimeError",
    "InvalidInput",
    "Manifest",
    "ModelLoadError",
    "Prediction",
    "PredictionBatch",
    "Runtime",
    "RuntimeOptions",
    "UnsupportedModel",
    "__version__",
    "load",
    "read_manifest",
    "verify_artifact",
]
