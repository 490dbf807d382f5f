"""What every data set provides: labelled train/test samples, an optional unlabeled pool,
and one image loader that turns any file into an RGB image or a clear ``DataError``."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError
from ..utils.progress import bars_off

# (path, label); label is the global class id, -1 for unlabeled images.
Sample = Tuple[str, int]


@dataclass
class DatasetSplits:
    """A data set with its class split already applied.

    Attributes:
        name: short name used in messages and run directories (``emoji``, ``cub``, ...).
        root: where the images live.
        train: labelled samples of the training classes.
        test: labelled samples of the unseen test classes (never used for model selection).
        unlabeled: image paths without labels (a transfer set for distillation).
        unlabeled_classes: optional, per unlabeled image, the training class it is a variant of
            (e.g. an emoji's skin tones); lets tests prove the pool never touches a test class.
        class_names: global class id -> readable name.
        recall_ks: the K of Recall@K this data set is usually reported with.
        domains: optional per-test-sample domain tag (e.g. the emoji vendor) for cross-domain recall.
        license: licence / attribution text of the data.
    """

    name: str
    root: Path
    train: List[Sample]
    test: List[Sample]
    unlabeled: List[str] = field(default_factory=list)
    unlabeled_classes: Optional[List[int]] = None
    class_names: Dict[int, str] = field(default_factory=dict)
    recall_ks: Tuple[int, ...] = (1, 2, 4, 8)
    domains: Optional[List[str]] = None
    license: str = ""

    def summary(self) -> Dict[str, int]:
        return {
            "train_classes": len({y for _, y in self.train}),
            "train_images": len(self.train),
            "test_classes": len({y for _, y in self.test}),
            "test_images": len(self.test),
            "unlabeled_images": len(self.unlabeled),
        }


# Big images are decoded at a reduced size: no model here takes more than 518 px, and a crop of a
# quarter of the image still sees 512 px at this short side.
WORKING_SIDE = 1024


def load_image(path: str | Path, dataset: str = "") -> Image.Image:
    """Open an image as RGB, upright (its EXIF orientation applied, as a phone's gallery shows it);
    transparent pixels are composited onto white. An image whose short side is at least twice
    ``WORKING_SIDE`` is decoded at a reduced size (JPEG: by the decoder itself; others: reduced
    right after decoding), so a 12000x12000 photo costs tens of MB, not gigabytes.

    Raises:
        DataError: naming the file and the data set when it is missing, empty, truncated, not an
            image, or above PIL's decompression-bomb limit.
    """
    where = f" (data set {dataset!r})" if dataset else ""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise DataError(f"empty image file {path}{where}; delete it or pass --skip-bad-images")
        with warnings.catch_warnings():
            # between PIL's warning and error limits an image is decoded reduced, so its warning says nothing
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return to_rgb(ImageOps.exif_transpose(_decode_reduced(img)))
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"image not found: {path}{where}") from None
    except Image.DecompressionBombError as e:
        size = str(e).split(", could be")[0]  # "Image size (N pixels) exceeds limit of M pixels"
        raise DataError(f"image too large: {path}{where}: {size} (PIL's decompression-bomb limit); shrink or "
                        "delete it, or pass --skip-bad-images") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(
            f"cannot read image {path}{where}: {e}; fix or delete it, or pass --skip-bad-images"
        ) from None


def _decode_reduced(img: Image.Image) -> Image.Image:
    factor = min(img.size) // WORKING_SIDE
    if factor >= 2:
        img.draft(img.mode, (img.width // factor, img.height // factor))  # JPEG: decode at 1/2, 1/4 or 1/8
    img.load()
    factor = min(img.size) // WORKING_SIDE
    if factor < 2:
        return img
    if img.mode in ("1", "P", "PA"):  # reduce() averages pixel values, which palette indices are not
        img = img.convert("RGBA")
    return img.reduce(factor)


def to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


def find_bad_images(paths: Sequence[str], dataset: str = "", progress: bool = True) -> List[Tuple[str, str]]:
    """Decode every image fully; return ``(path, reason)`` for each one that fails."""
    from tqdm import tqdm

    bad = []
    for p in tqdm(paths, desc=f"checking {dataset or 'images'}", unit="img", disable=bars_off(progress), leave=False):
        try:
            load_image(p, dataset)
        except DataError as e:
            bad.append((str(p), str(e)))
    return bad


def drop_bad_images(splits: DatasetSplits, progress: bool = True) -> int:
    """Remove unreadable images from every part of ``splits`` in place; return how many."""
    every = [p for p, _ in splits.train] + [p for p, _ in splits.test] + list(splits.unlabeled)
    bad = {p for p, _ in find_bad_images(every, splits.name, progress)}
    if not bad:
        return 0
    if splits.domains is not None:
        splits.domains = [d for (p, _), d in zip(splits.test, splits.domains) if p not in bad]
    splits.train = [s for s in splits.train if s[0] not in bad]
    splits.test = [s for s in splits.test if s[0] not in bad]
    if splits.unlabeled_classes is not None:
        splits.unlabeled_classes = [c for p, c in zip(splits.unlabeled, splits.unlabeled_classes) if p not in bad]
    splits.unlabeled = [p for p in splits.unlabeled if p not in bad]
    return len(bad)


def split_classes_first_half(labels: Sequence[int]) -> Tuple[set, set]:
    """The paper's protocol: the first half of the (sorted) class ids train, the rest test."""
    classes = sorted(set(labels))
    half = len(classes) // 2
    return set(classes[:half]), set(classes[half:])


def first_half_splits(name: str, root: Path, samples: Sequence[Sample], class_names: Dict[int, str],
                      license: str = "") -> DatasetSplits:
    """``DatasetSplits`` under the paper's protocol (first half of the classes train), samples sorted."""
    train_classes, _ = split_classes_first_half([y for _, y in samples])
    ordered = sorted(samples)
    return DatasetSplits(
        name=name,
        root=root,
        train=[s for s in ordered if s[1] in train_classes],
        test=[s for s in ordered if s[1] not in train_classes],
        class_names=class_names,
        recall_ks=(1, 2, 4, 8),
        license=license,
    )


class ImageDataset:
    """A torch-style dataset over ``(path, label)`` samples; returns ``(image, label, index)``."""

    def __init__(self, samples: Sequence[Sample], transform: Callable, dataset: str = ""):
        self.samples = list(samples)
        self.transform = transform
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return self.transform(load_image(path, self.dataset)), label, index
