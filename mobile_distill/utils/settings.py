"""Settings dataclasses (``ExportConfig``, ``BenchConfig``) changed by keyword, as their functions take them."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Mapping, Type, TypeVar

T = TypeVar("T")


def changed(config: T, changes: Mapping, error: Type[Exception], what: str) -> T:
    """``config`` with ``changes`` applied; a name that is not a field is one line naming the valid ones."""
    known = {f.name for f in fields(config)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise error(f"{what} has no setting {', '.join(unknown)}; settings: {', '.join(sorted(known))}")
    return replace(config, **changes)
