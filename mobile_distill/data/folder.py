"""A user's own images, one folder per class.

Two layouts are accepted:

* ``PATH/train/<class>/*`` and ``PATH/test/<class>/*``: the split is taken as given.
* ``PATH/<class>/*``: the sorted class names are split alternately, even positions train and odd
  positions test (as in the emoji set), so that both halves cover the alphabet evenly instead of
  "a-m" training and "n-z" testing.

Images may sit in sub-folders of a class folder. Files whose extension is not an image extension
(case-insensitive) and hidden files (``.DS_Store``, macOS ``._*`` shadows) are ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

from ..errors import DataError
from . import register_dataset
from ._layout import sorted_samples
from .base import DatasetSplits, Sample

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"})
LAYOUT = "PATH/<class>/<image> or PATH/train/<class>/<image> and PATH/test/<class>/<image>"


@register_dataset
def folder(path: Optional[Path]) -> DatasetSplits:
    """A class-per-folder image tree.

    Args:
        path: the tree's root (required: there is no default location).

    Returns:
        Labels are indices into the sorted names of all classes (of both splits), so a class
        present in ``train/`` and ``test/`` keeps one id.

    Raises:
        DataError: no path, a missing folder, only one of ``train/`` and ``test/``, or fewer than
            two classes with images in a split.
    """
    if path is None:
        raise DataError(f"the folder data set needs a path: use folder:PATH with {LAYOUT}")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}; expected {LAYOUT}")
    root = root.resolve()

    has_train, has_test = (root / "train").is_dir(), (root / "test").is_dir()
    if has_train != has_test:
        present, absent = ("train", "test") if has_train else ("test", "train")
        raise DataError(
            f"{root} has a {present}/ folder but no {absent}/ folder; add {absent}/<class>/ folders, "
            "or move the class folders up one level to split them alternately"
        )
    if has_train:
        train_by_class = _images_by_class(root / "train")
        test_by_class = _images_by_class(root / "test")
    else:
        by_class = _images_by_class(root)
        names = sorted(by_class)
        train_by_class = {n: by_class[n] for n in names[0::2]}
        test_by_class = {n: by_class[n] for n in names[1::2]}

    for split, found in (("train", train_by_class), ("test", test_by_class)):
        if len(found) < 2:
            raise DataError(
                f"the {split} split of {root} has {len(found)} class(es) with images; retrieval needs at "
                f"least 2 per split ({LAYOUT}; image extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )

    class_ids = {name: i for i, name in enumerate(sorted(set(train_by_class) | set(test_by_class)))}
    return DatasetSplits(
        name="folder",
        root=root,
        train=_samples(train_by_class, class_ids),
        test=_samples(test_by_class, class_ids),
        class_names={i: name for name, i in class_ids.items()},
        recall_ks=(1, 2, 4, 8),
    )


def _images_by_class(parent: Path) -> Dict[str, List[str]]:
    """Class folder name -> sorted image paths; folders without images are left out."""
    found = {}
    for d in sorted(parent.iterdir()):
        if not d.is_dir() or d.name.startswith("."):
            continue
        images = sorted(
            str(p) for p in d.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(d).parts)
        )
        if images:
            found[d.name] = images
    return found


def _samples(by_class: Dict[str, List[str]], class_ids: Dict[str, int]) -> List[Sample]:
    return sorted_samples((p, class_ids[name]) for name, paths in by_class.items() for p in paths)


def list_images(path: str | Path) -> List[str]:
    """Every image file under ``path`` (recursively, sorted), e.g. an unlabeled transfer set."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"unlabeled image folder not found: {root}")
    images = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not images:
        raise DataError(f"no images in {root} (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return images
