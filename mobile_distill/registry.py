"""A tiny name -> factory registry, shared by models, losses and data sets (timm-style)."""

from __future__ import annotations

from typing import Callable, Dict, List, TypeVar

from .errors import RegistryError

F = TypeVar("F", bound=Callable)


class Registry:
    """Maps names to factories; unknown and duplicate names raise ``RegistryError``."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, Callable] = {}

    def register(self, fn: F = None, *, name: str | None = None):
        def deco(f: F) -> F:
            key = name or f.__name__
            if key in self._entries:
                raise RegistryError(f"{self.kind} {key!r} is registered twice")
            self._entries[key] = f
            return f

        return deco(fn) if fn is not None else deco

    def get(self, name: str) -> Callable:
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(
                f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}"
            ) from None

    def names(self) -> List[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries
