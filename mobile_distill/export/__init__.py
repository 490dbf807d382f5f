"""Export a trained student to ONNX, TFLite and CoreML, each file proven against PyTorch.

    from mobile_distill.export import export
    report = export("runs/student/last.pt", formats=["all"])

One module per format (``onnx``, ``tflite``, ``coreml``), a shared parity gate (``parity``), the
model card and embedded metadata (``metadata``), the orchestration (``api``).
"""

from .api import export
from .formats import FORMATS
from .metadata import read_metadata
from .parity import ExportError, Thresholds
from .report import format_report

__all__ = ["export", "FORMATS", "read_metadata", "ExportError", "Thresholds", "format_report"]
