"""Export a trained student to ONNX, TFLite, CoreML and ExecuTorch, each file proven against PyTorch.

    from mobile_distill.export import export
    report = export("runs/student/last.pt", formats=["all"])

One module per format (``onnx``, ``tflite``, ``coreml``, ``executorch``), a shared parity gate (``parity``), the
model card and embedded metadata (``metadata``), the orchestration (``api``); the files run on
``mobile_distill.runtime``. Names are imported lazily, so importing the package loads no torch.
"""

import importlib

_EXPORTS = {"export": "api", "ExportConfig": "config", "FORMATS": "formats", "read_metadata": "metadata",
            "ExportError": "config",
            "Thresholds": "config", "format_report": "report", "failure_message": "report"}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
