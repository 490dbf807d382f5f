"""Versions of the tools a result depends on, recorded with every export and benchmark."""

from __future__ import annotations

from importlib import metadata as importlib_metadata
from typing import Dict

_TOOLS = ("mobile_distill", "torch", "onnx", "onnxruntime", "onnxscript", "onnxslim", "litert-torch",
          "ai-edge-litert", "ai-edge-quantizer", "coremltools", "executorch")


def tool_versions() -> Dict[str, str]:
    out = {}
    for name in _TOOLS:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out
