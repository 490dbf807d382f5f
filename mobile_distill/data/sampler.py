"""P classes x K images per batch, reproducible from (seed, epoch).

pytorch-metric-learning's ``MPerClassSampler`` draws from a module-global NumPy RandomState,
which cannot be re-seeded per epoch without touching global state, so a run resumed mid-way
could not replay the same batches. This sampler derives every epoch's order from
``(seed, epoch)`` alone, which is all that resume needs.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterator, List, Sequence

import torch

from ..errors import ConfigError
from ..utils.seed import epoch_seed


class PKBatchSampler:
    """Yields lists of dataset indices: ``classes_per_batch`` classes, ``images_per_class`` each.

    Every class appears at most once per epoch; classes with fewer than K images are sampled
    with replacement. ``len()`` is ``num_classes // classes_per_batch`` unless ``batches_per_epoch``
    is given (then classes are reshuffled as often as needed). Samples labelled -1 are unlabeled:
    ``unlabeled_per_batch`` of them (drawn without replacement within an epoch's pass) are
    appended to every batch, for the distillation losses only.
    """

    def __init__(self, labels: Sequence[int], classes_per_batch: int, images_per_class: int,
                 seed: int = 0, batches_per_epoch: int = 0, unlabeled_per_batch: int = 0):
        self.by_class = defaultdict(list)
        self.unlabeled: List[int] = []
        for i, y in enumerate(labels):
            if int(y) < 0:
                self.unlabeled.append(i)
            else:
                self.by_class[int(y)].append(i)
        if unlabeled_per_batch and not self.unlabeled:
            raise ConfigError("unlabeled_per_batch is set but there are no unlabeled images")
        self.u = unlabeled_per_batch
        self.classes = sorted(self.by_class)
        if classes_per_batch < 2 or images_per_class < 1:
            raise ConfigError("a PK batch needs classes_per_batch >= 2 and images_per_class >= 1")
        if classes_per_batch > len(self.classes):
            raise ConfigError(
                f"classes_per_batch={classes_per_batch} but the training split has only {len(self.classes)} classes"
            )
        self.p, self.k, self.seed = classes_per_batch, images_per_class, seed
        self.num_batches = batches_per_epoch or len(self.classes) // classes_per_batch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[List[int]]:
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order: List[int] = []
        pool: List[int] = []
        for _ in range(self.num_batches):
            if len(order) < self.p:  # a fresh pass; leftovers dropped so no class repeats in a batch
                order = [self.classes[i] for i in torch.randperm(len(self.classes), generator=g).tolist()]
            chosen, order = order[: self.p], order[self.p:]
            batch = []
            for c in chosen:
                members = self.by_class[c]
                if len(members) >= self.k:
                    picks = torch.randperm(len(members), generator=g)[: self.k]
                else:
                    picks = torch.randint(len(members), (self.k,), generator=g)
                batch += [members[j] for j in picks.tolist()]
            while len(pool) < self.u:
                pool += [self.unlabeled[i] for i in torch.randperm(len(self.unlabeled), generator=g).tolist()]
            batch, pool = batch + pool[: self.u], pool[self.u:]
            yield batch
