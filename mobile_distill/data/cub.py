"""CUB-200-2011 (Caltech-UCSD Birds): 200 species, 11,788 images; classes 1-100 train, 101-200 test."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from ..errors import DataError
from . import register_dataset
from ._layout import check_images_present, locate_root, read_rows, require_file, to_int
from .base import DatasetSplits, first_half_splits

LAYOUT = (
    "CUB_200_2011/ with images.txt (<id> <relpath>), image_class_labels.txt (<id> <class>), "
    "classes.txt (<class> <name>) and images/"
)
LICENSE = (
    "CUB-200-2011, Wah et al., Caltech (CNS-TR-2011-001). Images from Flickr; "
    "for non-commercial research and educational use."
)


@register_dataset
def cub(path: Optional[Path]) -> DatasetSplits:
    """CUB-200-2011 in its official layout.

    Args:
        path: the ``CUB_200_2011`` folder or its parent; None for the prepared copy
            (``mdistill data prepare cub``).

    Returns:
        The metric-learning split: the first 100 classes train, the last 100 test.

    Raises:
        DataError: missing or damaged index files, or images not unpacked.
    """
    root = locate_root("cub", path, "images.txt", "CUB_200_2011", LAYOUT)
    images_txt = require_file(root, "images.txt", "cub", LAYOUT)
    labels_txt = require_file(root, "image_class_labels.txt", "cub", LAYOUT)
    classes_txt = require_file(root, "classes.txt", "cub", LAYOUT)

    images = {to_int(i, images_txt, "image id"): rel for i, rel in read_rows(images_txt, 2)}
    labels = {to_int(i, labels_txt, "image id"): to_int(c, labels_txt, "class id") for i, c in read_rows(labels_txt, 2)}
    # "001.Black_footed_Albatross" -> "Black_footed_Albatross": the number is already the id.
    class_names = {
        to_int(c, classes_txt, "class id"): re.sub(r"^\d+\.", "", name) for c, name in read_rows(classes_txt, 2)
    }

    unlabeled = sorted(set(images) - set(labels))
    if unlabeled:
        raise DataError(
            f"{len(unlabeled)} image id(s) of {images_txt} (first: {unlabeled[0]}) have no class in {labels_txt}; "
            "the data set is incomplete: extract it again"
        )
    samples = [(str(root / "images" / images[i]), labels[i]) for i in images]
    check_images_present(root, samples, "cub", "images")

    return first_half_splits("cub", root, samples, class_names, LICENSE)
