"""Data sets by name: ``create_dataset("emoji")``, ``create_dataset("cub:PATH")``, ``folder:PATH``, ...

Each builder module registers itself with ``@register_dataset`` and returns ``DatasetSplits``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import DataError
from ..registry import Registry
from .base import DatasetSplits, ImageDataset, drop_bad_images, find_bad_images, load_image

DATASETS = Registry("data set")
register_dataset = DATASETS.register


def parse_spec(spec: str) -> tuple[str, Optional[Path]]:
    """``"cub:/data/CUB_200_2011"`` -> ``("cub", Path(...))``; ``"emoji"`` -> ``("emoji", None)``."""
    name, sep, path = spec.partition(":")
    return name.strip().lower(), (Path(path).expanduser() if sep and path else None)


def create_dataset(spec: str, skip_bad_images: bool = False, progress: bool = True) -> DatasetSplits:
    """Build a data set from its spec string.

    Args:
        spec: ``NAME`` (data in the cache, see ``mdistill data fetch/prepare``) or ``NAME:PATH``.
        skip_bad_images: decode every image first and drop the unreadable ones (reported on stderr).

    Raises:
        RegistryError: unknown data set name (the message lists the known ones).
        DataError: missing or badly laid-out data.
    """
    _import_builders()
    name, path = parse_spec(spec)
    splits = DATASETS.get(name)(path)
    if not splits.train or not splits.test:
        raise DataError(f"data set {spec!r} has an empty train or test split: {splits.summary()}")
    if skip_bad_images:
        n = drop_bad_images(splits, progress=progress)
        if n:
            import sys

            print(f"skipped {n} unreadable image(s) in data set {splits.name!r}", file=sys.stderr)
    return splits


def _import_builders() -> None:
    # Importing registers each builder; kept lazy so `import mobile_distill.data` stays light.
    from . import cars, cub, emoji, folder, sop  # noqa: F401


__all__ = [
    "DATASETS",
    "DatasetSplits",
    "ImageDataset",
    "create_dataset",
    "drop_bad_images",
    "find_bad_images",
    "load_image",
    "parse_spec",
    "register_dataset",
]
