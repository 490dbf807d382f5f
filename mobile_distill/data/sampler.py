"""P classes x K images per batch, reproducible from (seed, epoch).

pytorch-metric-learning's ``MPerClassSampler`` draws from a module-global NumPy RandomState,
which cannot be re-seeded per epoch without touching global state, so a run resumed mid-way
could not replay the same batches. This sampler derives every epoch's order from
``(seed, epoch)`` alone, which is all that resume needs.

What an epoch is (``epoch_pass``):
- ``images`` (default): one pass over the labelled training images, as users of the field read
  "epoch". Each class's images are shuffled and cut into groups of K (a class whose size is not
  a multiple of K gets a last group overlapping the one before); every batch takes one group
  from each of P distinct classes, always from the classes with the most groups left (random
  among equals). ``len() = groups // P``, about ``images // (P*K)``, and the pass ends with
  fewer than P groups (P*K images) unused unless one class holds more than 1/P of the images.
  On a data set with many images per class (CUB: ~59) an epoch is therefore many batches, not
  one.
- ``classes``: one pass over the *classes* (each class once, K images of it), ``len() =
  classes // P``; the definition of the first release, kept to reproduce its figures.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, Iterator, List, Sequence

import torch

from ..errors import ConfigError
from ..utils.seed import epoch_seed

EPOCH_PASSES = ("images", "classes")


class PKBatchSampler:
    """Yields lists of dataset indices: ``classes_per_batch`` classes, ``images_per_class`` each.

    Classes with fewer than K images are sampled with replacement. ``batches_per_epoch``, when
    given, fixes ``len()`` whatever ``epoch_pass`` says (passes restart as often as needed).
    Samples labelled -1 are unlabeled: ``unlabeled_per_batch`` of them (drawn without
    replacement within a pass over them) are appended to every batch, for the distillation
    losses only.
    """

    def __init__(self, labels: Sequence[int], classes_per_batch: int, images_per_class: int,
                 seed: int = 0, batches_per_epoch: int = 0, unlabeled_per_batch: int = 0,
                 epoch_pass: str = "images"):
        self.by_class = defaultdict(list)
        self.unlabeled: List[int] = []
        for i, y in enumerate(labels):
            if int(y) < 0:
                self.unlabeled.append(i)
            else:
                self.by_class[int(y)].append(i)
        if unlabeled_per_batch and not self.unlabeled:
            raise ConfigError("unlabeled_per_batch is set but there are no unlabeled images")
        if epoch_pass not in EPOCH_PASSES:
            raise ConfigError(f"epoch_pass must be one of {', '.join(EPOCH_PASSES)}, got {epoch_pass!r}")
        self.u = unlabeled_per_batch
        self.classes = sorted(self.by_class)
        if classes_per_batch < 2 or images_per_class < 1:
            raise ConfigError("a PK batch needs classes_per_batch >= 2 and images_per_class >= 1")
        if classes_per_batch > len(self.classes):
            raise ConfigError(
                f"classes_per_batch={classes_per_batch} but the training split has only {len(self.classes)} classes"
            )
        self.p, self.k, self.seed, self.epoch_pass = classes_per_batch, images_per_class, seed, epoch_pass
        groups = sum(-(-len(m) // self.k) for m in self.by_class.values())  # ceil(n / K) per class
        natural = groups // self.p if epoch_pass == "images" else len(self.classes) // self.p
        self.num_batches = batches_per_epoch or max(1, natural)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[List[int]]:
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        batches = self._image_pass(g) if self.epoch_pass == "images" else self._class_pass(g)
        pool: List[int] = []
        for _ in range(self.num_batches):
            batch = next(batches)
            while len(pool) < self.u:
                pool += [self.unlabeled[i] for i in torch.randperm(len(self.unlabeled), generator=g).tolist()]
            batch, pool = batch + pool[: self.u], pool[self.u:]
            yield batch

    def _pick(self, members: List[int], g: torch.Generator) -> List[int]:
        if len(members) >= self.k:
            picks = torch.randperm(len(members), generator=g)[: self.k]
        else:
            picks = torch.randint(len(members), (self.k,), generator=g)
        return [members[j] for j in picks.tolist()]

    def _class_pass(self, g: torch.Generator) -> Iterator[List[int]]:
        order: List[int] = []
        while True:
            if len(order) < self.p:  # a fresh pass; leftovers dropped so no class repeats in a batch
                order = [self.classes[i] for i in torch.randperm(len(self.classes), generator=g).tolist()]
            chosen, order = order[: self.p], order[self.p:]
            yield [i for c in chosen for i in self._pick(self.by_class[c], g)]

    def _groups(self, g: torch.Generator) -> Dict[int, List[List[int]]]:
        """Each class's images shuffled and cut into groups of K (the last group overlaps the
        one before it rather than being short; a class with fewer than K images gives one group
        drawn with replacement)."""
        groups = {}
        for c in self.classes:
            members = self.by_class[c]
            if len(members) < self.k:
                groups[c] = [self._pick(members, g)]
                continue
            perm = [members[j] for j in torch.randperm(len(members), generator=g).tolist()]
            cuts = [perm[s: s + self.k] for s in range(0, len(perm) - self.k + 1, self.k)]
            if len(perm) % self.k:
                cuts.append(perm[-self.k:])
            groups[c] = cuts
        return groups

    def _image_pass(self, g: torch.Generator) -> Iterator[List[int]]:
        classes = torch.tensor(self.classes)
        while True:  # one pass over the images per loop; another starts if batches_per_epoch asks for more
            groups = self._groups(g)
            left = torch.tensor([len(groups[c]) for c in self.classes], dtype=torch.float64)
            while int((left > 0).sum()) >= self.p:
                # the P classes with the most groups left; the random fraction breaks ties
                keys = torch.where(left > 0, left + torch.rand(len(left), generator=g, dtype=torch.float64),
                                   torch.tensor(-1.0, dtype=torch.float64))
                chosen = keys.topk(self.p).indices
                left[chosen] -= 1
                yield [i for c in classes[chosen].tolist() for i in groups[c].pop()]
