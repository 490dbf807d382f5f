"""Training on several processes: each rank's share of the global batch, the student forward DDP
wraps, and the torchrun launcher (``mdistill train --nproc N``). The rank primitives underneath
(rank, world size, gathers) are ``mobile_distill.distributed``.

- ``RankBatches``: each rank's share of the recipe's *global* PK batch. The global batch is the
  one a 1-process run draws (same sampler, same ``(seed, epoch)``); rank r takes classes
  ``[r*P/W, (r+1)*P/W)`` of it with all their K images, and the same slice of its unlabeled rows.
  So N processes run the recipe's optimisation, not N times its batch, an epoch is still one pass
  over the images, and a run resumed on another number of processes replays the same batches.
- ``StudentForward``: the module DDP wraps (the student's forward with its feature maps), so DDP
  sees every forward; the frozen teacher is never wrapped.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..distributed import check_even_split, rank, world_size
from ..errors import ConfigError
from ..models.features import collect_features


class RankBatches:
    """This rank's slice of every global batch of ``batches`` (a ``PKBatchSampler``, or
    ``ViewBatches`` around one): ``labelled`` = P*K class-grouped entries, then ``unlabeled``."""

    def __init__(self, batches, labelled: int, unlabeled: int, images_per_class: int,
                 rank_: Optional[int] = None, world: Optional[int] = None):
        self.batches, self.r = batches, rank() if rank_ is None else rank_
        self.w = world_size() if world is None else world
        check_even_split(labelled // images_per_class, unlabeled, self.w)
        self.labelled, self.unlabeled = labelled, unlabeled

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[List]:
        a, u = self.labelled // self.w, self.unlabeled // self.w
        for batch in self.batches:
            labelled, pool = batch[: self.labelled], batch[self.labelled:]
            yield labelled[self.r * a: (self.r + 1) * a] + pool[self.r * u: (self.r + 1) * u]


class StudentForward(nn.Module):
    """What DDP wraps: the student's embedding and the feature maps its losses need."""

    def __init__(self, model: nn.Module, stages: Sequence[int]):
        super().__init__()
        self.model, self.stages = model, tuple(stages)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[int, torch.Tensor]]:
        return collect_features(self.model, x, self.stages)


def wrap_student(model: nn.Module, stages: Sequence[int], device: torch.device, sync_bn: bool = False,
                 compile_: bool = False) -> nn.Module:
    """The student's training forward: DDP-wrapped on several processes, optionally compiled."""
    forward: nn.Module = StudentForward(model, stages)
    if world_size() > 1:
        if sync_bn:
            if device.type != "cuda":
                raise ConfigError("sync_bn needs CUDA (torch's SyncBatchNorm has no CPU kernel); drop --sync-bn")
            forward = nn.SyncBatchNorm.convert_sync_batchnorm(forward)
        forward = nn.parallel.DistributedDataParallel(
            forward, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(forward) if compile_ else forward


def torchrun_command(nproc: int, args: Sequence[str]) -> List[str]:
    """The torchrun call that runs ``mdistill ARGS`` on ``nproc`` local processes
    (``--standalone``: a c10d rendezvous on a free local port)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "mobile_distill.cli", *map(str, args)]


def launch(nproc: int, args: Sequence[str]) -> int:
    """Run ``mdistill ARGS`` under torchrun on ``nproc`` processes; returns its exit code."""
    return subprocess.call(torchrun_command(nproc, args))


def launch_train(nproc: int, cfg=None, resume=None, quiet: bool = False) -> int:
    """``mdistill train`` on ``nproc`` local processes: ``cfg`` (a ``TrainConfig``, written to a
    temporary YAML for the workers) or ``resume`` (a ``last.pt``). Returns torchrun's exit code."""
    import tempfile
    from pathlib import Path

    from ..config import dump_yaml

    if resume is not None:
        from ..checkpoint import load_checkpoint
        from ..config import make_config

        cfg = make_config(load_checkpoint(resume)["config"])
    if cfg.qat:  # refused here rather than by every worker under torchrun's own error report
        raise ConfigError("--qat runs on one process; drop --nproc")
    check_even_split(cfg.classes_per_batch, cfg.unlabeled_per_batch, nproc)
    with tempfile.TemporaryDirectory(prefix="mdistill-launch-") as tmp:
        args = ["train", *(["--quiet"] if quiet else [])]
        if resume is not None:
            args += ["--resume", str(resume)]
        else:
            config = Path(tmp) / "config.yaml"
            config.write_text(dump_yaml(cfg))
            args += ["--config", str(config)]
        return launch(nproc, args)
