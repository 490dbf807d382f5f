"""The export formats, one module each (``onnx.py``, ``tflite.py``, ``coreml.py``).

Every format module offers the same functions (Optimum-style, no base class needed):
``PRECISIONS``, ``DEFAULT_PRECISIONS``, ``DEFAULT_LAYOUT``, ``SUFFIX``, ``FORMAT_NAME``, ``RUNTIME``,
``check_installed()``, ``convert(module, spec, precision, path, metadata, calib, **options) -> details``,
``run(path, spec, images) -> embeddings``, ``read_metadata(path)``, and optionally
``parity_note()`` (where the parity figures come from, when not the format's own runtime),
``structural_checks(...)``, ``cross_check(...)`` (a second runtime compared with the first), and
``MIXED_PRECISIONS`` with ``convert_mixed(...)`` (a failed quantised file retried with some ops float).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import List, Sequence

from .parity import ExportError

FORMATS = ("onnx", "tflite", "coreml")
_SUFFIXES = {".onnx": "onnx", ".tflite": "tflite", ".mlpackage": "coreml"}


def get(name: str) -> ModuleType:
    if name not in FORMATS:
        raise ExportError(f"unknown export format {name!r}; choose from {', '.join(FORMATS)} or all")
    return importlib.import_module(f".{name}", __package__)


def parse_formats(names: Sequence[str]) -> List[str]:
    """``["all"]`` -> every format; keeps the user's order, drops repeats, rejects unknown names."""
    out: List[str] = []
    for raw in names:
        for name in str(raw).split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name != "all" and name not in FORMATS:
                get(name)  # raises the readable error
            for n in (FORMATS if name == "all" else (name,)):
                if n not in out:
                    out.append(n)
    if not out:
        raise ExportError("no export format given; choose from " + ", ".join(FORMATS) + " or all")
    return out


def format_of(path: Path) -> str:
    fmt = _SUFFIXES.get(Path(path).suffix.lower())
    if fmt is None:
        raise ExportError(f"{path}: not an exported model (expected one of {', '.join(_SUFFIXES)})")
    return fmt
