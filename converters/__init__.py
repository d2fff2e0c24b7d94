"""converters: turn an MLflow model into a small, verified, quantized artifact for edge_runtime.

    import converters
    report = converters.convert("models:/iris/3", format="onnx", quantize="auto", out="artifacts/iris")
    report.mode, report.parity["agreement"], report.manifest.size_bytes

Heavy libraries (mlflow, scikit-learn, skl2onnx, onnx) are imported only when a conversion runs.
Flavors live in ``converters/flavors/`` (one module each); quantization modes per format in
``converters/quantize.py``.
"""

from converters.convert import FORMATS, ConversionReport, convert
from converters.quantizers import MODES

__all__ = ["FORMATS", "MODES", "ConversionReport", "convert"]
