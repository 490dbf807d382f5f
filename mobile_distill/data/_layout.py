"""Shared helpers of the on-disk data set builders: where the root is, and reading index files."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Optional, Sequence

from .. import paths
from ..errors import DataError


def locate_root(name: str, path: Optional[Path], marker: str, subdir: str, layout: str) -> Path:
    """The folder that holds ``marker``: ``path`` itself or ``path/subdir``.

    Args:
        name: data set name, for messages and the default location.
        path: the user's folder, or None for the prepared copy under ``paths.data_dir(name)``.
        marker: an index file that must sit in the root (``images.txt``, ...).
        subdir: the folder name the official archive unpacks to (``CUB_200_2011``); also looked for
            inside ``path`` so that users can point at either level.
        layout: a one-line description of the expected layout for error messages.

    Raises:
        DataError: the default location is not prepared, ``path`` does not exist, or neither level
            holds ``marker``.
    """
    if path is None:
        path = paths.data_dir(name)
        if not path.exists():
            raise DataError(
                f"data set {name!r} is not prepared ({path} does not exist); run "
                f"`mdistill data prepare {name} --archive PATH` (or `--download`), or pass {name}:PATH"
            )
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DataError(f"{name} data set folder not found: {path}; expected {layout}")
    candidates = [path, path / subdir] if subdir else [path]
    for root in candidates:
        if (root / marker).is_file():
            return root.resolve()
    raise DataError(f"missing {marker} in {path}: not a {name} data set; expected {layout}")


def require_file(root: Path, filename: str, name: str, layout: str) -> Path:
    """``root/filename``, or a DataError naming the missing file and the expected layout."""
    f = root / filename
    if not f.is_file():
        raise DataError(f"missing {filename} in {root}: the {name} data set is incomplete; expected {layout}")
    return f


def read_rows(path: Path, columns: int, header: bool = False) -> List[List[str]]:
    """Whitespace-separated rows of an index file; the last column keeps any inner spaces.

    Raises:
        DataError: naming the file and line of a row with too few columns.
    """
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if header and lineno == 1 or not line.strip():
                continue
            parts = line.split(maxsplit=columns - 1)
            if len(parts) < columns:
                raise DataError(
                    f"bad line {lineno} in {path}: expected {columns} columns, got {line.strip()!r}; "
                    "the file is damaged: extract the data set again"
                )
            rows.append([p.strip() for p in parts])
    return rows


def to_int(value: str, path: Path, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataError(f"bad {what} {value!r} in {path}: expected an integer") from None


def check_images_present(root: Path, samples: Sequence[tuple], name: str, folder: str) -> None:
    """Fail early when the index files are there but the images were not unpacked.

    Only the first image is checked: stat-ing 120k files on a network disk takes minutes, and a
    single missing image is reported by ``load_image`` (or skipped with ``--skip-bad-images``).
    """
    if samples and not Path(samples[0][0]).is_file():
        raise DataError(
            f"image {samples[0][0]} listed in the {name} index is missing; "
            f"extract the images into {root / folder}"
        )


def sorted_samples(samples: Iterable[tuple]) -> list:
    return sorted(samples, key=lambda s: (s[0], s[1]))
