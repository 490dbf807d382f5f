"""Where export formats register themselves: each format module decorates its ``convert`` with
``@register_exporter(NAME, SUFFIX)`` (as models use ``register_model``), and ``formats.py`` imports
the format modules by name, so a reader and a tool see which formats exist and where they live."""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Callable, Dict

from ..errors import RegistryError

EXPORTERS: Dict[str, ModuleType] = {}  # format name -> its module, in registration order
SUFFIXES: Dict[str, str] = {}  # file suffix -> format name


def register_exporter(name: str, suffix: str) -> Callable:
    """Register the module whose ``convert`` this decorates as the exporter of format ``name``
    writing ``*suffix`` files. The module offers the format API ``formats.py`` describes."""
    def decorate(convert: Callable) -> Callable:
        if name in EXPORTERS:
            raise RegistryError(f"export format {name!r} is registered twice")
        EXPORTERS[name] = sys.modules[convert.__module__]
        SUFFIXES[suffix] = name
        return convert

    return decorate
