"""Replayable augmented views: view ``v`` of image ``i`` is the same crop every time it is drawn.

Consistent distillation (Beyer et al., CVPR 2022) wants the teacher to see exactly the student's
augmented view. A live teacher does that at the cost of a teacher forward per image per epoch;
replaying a fixed set of views per image lets the teacher's outputs for every view be computed
once (``Teacher.build_view_cache``) and read back each epoch, so the student trains at its own
speed. The training transform is run under a private RNG state seeded by ``(seed, i, v)``;
every random op in it (crop, flip, jitter) therefore repeats exactly.
"""

from __future__ import annotations

from typing import Callable, Iterator, List, Sequence, Tuple

import torch

from ..utils.seed import epoch_seed
from .base import Sample, load_image

_VIEW_STREAM = 0x5EED  # separates the per-epoch view draw from the sampler's own stream


def view_seed(seed: int, index: int, view: int) -> int:
    return (seed * 1_000_003 + index * 1_009 + view) % (2**63 - 1)


def replay(transform: Callable, image, seed: int, index: int, view: int) -> torch.Tensor:
    """``transform(image)`` with its randomness fixed by ``(seed, index, view)``; the caller's RNG is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(view_seed(seed, index, view))
        return transform(image)


class ReplayedViews:
    """A dataset over ``(index, view)`` keys: ``(image, label, index, view)``, the crop replayed."""

    def __init__(self, samples: Sequence[Sample], transform: Callable, views: int, seed: int, dataset: str = ""):
        self.samples, self.transform, self.views, self.seed, self.dataset = list(samples), transform, views, seed, dataset

    def __len__(self) -> int:
        return len(self.samples) * self.views

    def __getitem__(self, key: Tuple[int, int]):
        index, view = key
        path, label = self.samples[index]
        image = replay(self.transform, load_image(path, self.dataset), self.seed, index, view)
        return image, label, index, view


class ViewBatches:
    """Wraps a batch sampler of indices; gives each index one of ``views`` views, drawn per epoch
    from ``(seed, epoch)`` so that a resumed run draws the same views."""

    def __init__(self, batches, views: int, seed: int):
        self.batches, self.views, self.seed = batches, views, seed

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        g = torch.Generator().manual_seed(epoch_seed(self.seed ^ _VIEW_STREAM, self.batches.epoch))
        for batch in self.batches:
            views = torch.randint(self.views, (len(batch),), generator=g).tolist()
            yield list(zip(batch, views))
