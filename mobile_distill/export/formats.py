"""The export formats, one module each (``onnx.py``, ``tflite/converter.py``, ``coreml.py``,
``executorch.py``), each
registered by ``@register_exporter`` on its ``convert`` (``registry.py``) when imported below.

Every format module offers the same functions (Optimum-style, no base class needed):
``PRECISIONS``, ``DEFAULT_PRECISIONS``, ``DEFAULT_LAYOUT``, ``SUFFIX``, ``FORMAT_NAME``, ``RUNTIME``,
``check_installed()``, ``convert(module, spec, precision, path, metadata, calib, **options) -> details``,
``run(path, spec, images) -> embeddings``, ``read_metadata(path)``, and optionally
``parity_note()`` (where the parity figures come from, when not the format's own runtime),
``structural_checks(...)``, ``cross_check(...)`` (a second runtime compared with the first), and
``MIXED_PRECISIONS`` with ``convert_mixed(...)`` (a failed quantised file retried with some ops float).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import List, Sequence

from ..errors import ExportError
from . import onnx  # noqa: F401  (each import registers its format; their order is --format all's)
from .tflite import converter  # noqa: F401
from . import coreml  # noqa: F401,E402
from . import executorch  # noqa: F401,E402
from .registry import EXPORTERS, SUFFIXES

FORMATS = tuple(EXPORTERS)


def get(name: str) -> ModuleType:
    if name not in EXPORTERS:
        raise ExportError(f"unknown export format {name!r}; choose from {', '.join(FORMATS)} or all")
    return EXPORTERS[name]


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
    fmt = SUFFIXES.get(Path(path).suffix.lower())
    if fmt is None:
        raise ExportError(f"{path}: not an exported model (expected one of {', '.join(SUFFIXES)})")
    return fmt
