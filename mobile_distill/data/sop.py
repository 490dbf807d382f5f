"""Stanford Online Products: 22,634 products, 120,053 images, with its official class split
(11,318 train classes in ``Ebay_train.txt``, 11,316 test classes in ``Ebay_test.txt``)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..errors import DataError
from . import register_dataset
from ._layout import check_images_present, locate_root, read_rows, require_file, sorted_samples, to_int
from .base import DatasetSplits, Sample

LAYOUT = (
    "Stanford_Online_Products/ with Ebay_train.txt and Ebay_test.txt "
    "(header 'image_id class_id super_class_id path', then one row per image) and the <category>_final/ folders"
)
LICENSE = (
    "Stanford Online Products, Oh Song et al., "
    "Deep Metric Learning via Lifted Structured Feature Embedding (CVPR 2016)."
)
_HEADER = ["image_id", "class_id", "super_class_id", "path"]


@register_dataset
def sop(path: Optional[Path]) -> DatasetSplits:
    """Stanford Online Products in its official layout and split.

    Args:
        path: the ``Stanford_Online_Products`` folder or its parent; None for the prepared copy.

    Returns:
        Train samples from ``Ebay_train.txt``, test samples from ``Ebay_test.txt``; labels are the
        official ``class_id``. Products have no names, so ``class_names`` holds "<category> <id>".

    Raises:
        DataError: a missing or damaged index file, or images not unpacked.
    """
    root = locate_root("sop", path, "Ebay_train.txt", "Stanford_Online_Products", LAYOUT)
    class_names: Dict[int, str] = {}
    train = _read_split(require_file(root, "Ebay_train.txt", "sop", LAYOUT), root, class_names)
    test = _read_split(require_file(root, "Ebay_test.txt", "sop", LAYOUT), root, class_names)
    check_images_present(root, train, "sop", "<category>_final")
    return DatasetSplits(
        name="sop",
        root=root,
        train=sorted_samples(train),
        test=sorted_samples(test),
        class_names=dict(sorted(class_names.items())),
        recall_ks=(1, 10, 100, 1000),
        license=LICENSE,
    )


def _read_split(index: Path, root: Path, class_names: Dict[int, str]) -> List[Sample]:
    with open(index, encoding="utf-8") as f:
        first = f.readline().split()
    if first != _HEADER:
        raise DataError(
            f"unexpected first line in {index}: {' '.join(first)!r}; expected the header {' '.join(_HEADER)!r}"
        )
    samples: List[Tuple[str, int]] = []
    for _, class_id, _, rel in read_rows(index, 4, header=True):
        label = to_int(class_id, index, "class_id")
        samples.append((str(root / rel), label))
        # "bicycle_final/111085122871_0.JPG" -> "bicycle 1"
        class_names.setdefault(label, f"{rel.split('/')[0].removesuffix('_final')} {label}")
    return samples
