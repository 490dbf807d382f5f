"""Cars-196 (Stanford Cars): 196 models, 16,185 images; classes 1-98 train, 99-196 test."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import DataError
from . import register_dataset
from ._layout import check_images_present, locate_root
from .base import DatasetSplits, first_half_splits

LAYOUT = (
    "a folder with cars_annos.mat (the original release: an 'annotations' struct with "
    "relative_im_path, class and test, plus class_names) and car_ims/"
)
LICENSE = (
    "Stanford Cars, Krause et al., 3D Object Representations for Fine-Grained Categorization (3dRR-13). "
    "For non-commercial research use."
)


@register_dataset
def cars(path: Optional[Path]) -> DatasetSplits:
    """Cars-196 in the layout of the original ``car_ims.tgz`` + ``cars_annos.mat`` release.

    The per-image ``test`` flag is ignored: metric learning splits by class, not by image.

    Args:
        path: the folder holding ``cars_annos.mat`` and ``car_ims/``; None for the prepared copy.

    Returns:
        The metric-learning split: classes 1-98 train, 99-196 test.

    Raises:
        DataError: a missing, unreadable or differently structured ``cars_annos.mat`` (e.g. the
            devkit's ``cars_train_annos.mat``), or images not unpacked.
    """
    root = locate_root("cars", path, "cars_annos.mat", "", LAYOUT)
    annos_file = root / "cars_annos.mat"
    rel_paths, classes, class_names = _read_annotations(annos_file)
    samples = [(str(root / rel), label) for rel, label in zip(rel_paths, classes)]
    check_images_present(root, samples, "cars", "car_ims")

    return first_half_splits("cars", root, samples, class_names, LICENSE)


def _read_annotations(annos_file: Path):
    from scipy.io import loadmat

    try:
        # squeeze_me turns MATLAB's 1x1 cells into plain str/int fields.
        mat = loadmat(annos_file, squeeze_me=True)
    except (ValueError, TypeError, OSError, NotImplementedError) as e:
        raise DataError(f"cannot read {annos_file}: {e}; download cars_annos.mat again") from None
    if "annotations" not in mat:
        raise DataError(f"{annos_file} has no 'annotations' variable; expected {LAYOUT}")
    annos = np.atleast_1d(mat["annotations"])
    fields = annos.dtype.names or ()
    missing = [f for f in ("relative_im_path", "class") if f not in fields]
    if missing:
        raise DataError(
            f"{annos_file} 'annotations' lacks field(s) {', '.join(missing)} (has: {', '.join(fields) or 'none'}); "
            f"expected {LAYOUT}"
        )
    try:
        rel_paths = [str(p) for p in annos["relative_im_path"]]
        classes = [int(c) for c in annos["class"]]
    except (TypeError, ValueError) as e:
        raise DataError(f"bad 'annotations' entries in {annos_file}: {e}; expected {LAYOUT}") from None
    # class_names[i] names class i + 1 (MATLAB is 1-based).
    names = [str(n) for n in np.atleast_1d(mat.get("class_names", []))]
    class_names = {c: (names[c - 1] if 0 < c <= len(names) else f"class {c}") for c in sorted(set(classes))}
    return rel_paths, classes, class_names
