"""One recipe on many processes: PyTorch's own ``torch.distributed``, launched by torchrun.

Nothing here launches or communicates on its own: torchrun (or SLURM's ``srun``) starts the
processes and sets the environment, ``init_distributed`` joins the process group the way timm's
``init_distributed_device`` does (nccl on CUDA, gloo on CPU), and the rest are small helpers the
training loop calls:

- ``RankBatches``: each rank's share of the recipe's *global* PK batch. The global batch is the
  one a 1-process run draws (same sampler, same ``(seed, epoch)``); rank r takes classes
  ``[r*P/W, (r+1)*P/W)`` of it with all their K images, and the same slice of its unlabeled rows.
  So N processes run the recipe's optimisation, not N times its batch, an epoch is still one pass
  over the images, and a run resumed on another number of processes replays the same batches.
- ``gather_rows``: all-gathers a batch across ranks; the local slice keeps its gradient, scaled by
  the world size so that DDP's gradient *average* equals the gradient of the loss on the whole
  global batch (pytorch-metric-learning's ``DistributedLossWrapper`` keeps the local slice the
  same way).
- ``StudentForward``: the module DDP wraps (the student's forward with its feature maps), so DDP
  sees every forward; the frozen teacher is never wrapped.
- rank-0 helpers (``is_main``, ``broadcast_object``) and ``gather_interleaved`` for sharded
  evaluation.

BatchNorm statistics are per rank (each rank normalises its own P/W classes); ``sync_bn`` makes
them global on CUDA (torch's SyncBatchNorm has no CPU kernel).
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn

from .errors import ConfigError


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def world_from_env(environ=None) -> Optional[Tuple[int, int, int]]:
    """``(rank, world_size, local_rank)`` from torchrun's or SLURM's variables; None outside both."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:  # torchrun / torch.distributed.run
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", 1)) > 1:  # srun, one task per GPU
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
    return None


def init_distributed(device_name: str = "auto") -> torch.device:
    """Join the process group when launched by torchrun or srun; returns this rank's device.

    ``device_name``: ``auto`` (CUDA when there is one), ``cpu``, ``cuda`` or ``cuda:N``. Under a
    launcher each rank takes GPU ``LOCAL_RANK``; the backend is nccl on CUDA, gloo on the CPU.
    SLURM needs ``MASTER_ADDR`` and ``MASTER_PORT`` set (docs/distributed.md shows how).
    """
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device_name)
    world = world_from_env()
    if dist.is_initialized() and device.type == "cuda":  # joined earlier (several runs in one process)
        return torch.device("cuda", torch.cuda.current_device())
    if world is None or dist.is_initialized():
        return device
    r, n, local = world
    if device.type == "cuda":
        if torch.cuda.device_count() <= local:
            raise ConfigError(f"rank {r} wants GPU {local} but this node has {torch.cuda.device_count()}")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if "MASTER_ADDR" not in os.environ:
        raise ConfigError("a distributed launch needs MASTER_ADDR and MASTER_PORT (torchrun sets them; "
                          "under SLURM export them, see docs/distributed.md)")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=r, world_size=n,
                            timeout=timedelta(minutes=30))
    return device


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (a run directory, evaluation metrics)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def check_even_split(classes: int, unlabeled: int, world: int) -> None:
    """Every rank gets whole classes and as many unlabeled rows as the others."""
    uneven = [f"{name} ({value})" for name, value in (("classes_per_batch", classes), ("unlabeled_per_batch", unlabeled))
              if value % world]
    if uneven:
        raise ConfigError(f"{world} processes must split the batch evenly: {' and '.join(uneven)} must be "
                          f"{'a multiple' if len(uneven) == 1 else 'multiples'} of {world}")


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


class _Gather(torch.autograd.Function):
    """All-gather along dim 0; backward returns the local slice's gradient times the world size."""

    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.slice = (rank() * len(x), (rank() + 1) * len(x))
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        lo, hi = ctx.slice
        return grad[lo:hi] * world_size()


def gather_rows(x: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Every rank's rows of ``x`` (B, ...) in rank order (W*B, ...); identity on one process.

    Gradients reach only this rank's rows, scaled by W: DDP then averages the W ranks' gradients
    into exactly the gradient of the loss computed on the whole gathered batch.
    """
    if x is None or world_size() == 1:
        return x
    if x.requires_grad:
        return _Gather.apply(x)
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def average_gradients(params) -> None:
    """Average the gradients of parameters DDP does not own (the objective's regressors and
    projections) so every rank steps them identically."""
    if world_size() == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world_size()


def gather_interleaved(*tensors: torch.Tensor, n: int) -> Tuple[torch.Tensor, ...]:
    """Rank r embedded rows ``r, r+W, r+2W, ...`` of ``n``; returns all ``n`` rows in order."""
    if world_size() == 1:
        return tensors
    w, per = world_size(), -(-n // world_size())
    # nccl gathers GPU tensors only; the results come back to the CPU either way
    where = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    out = []
    for x in tensors:
        padded = torch.zeros((per, *x.shape[1:]), dtype=x.dtype, device=where)
        padded[: len(x)] = x.to(where)
        parts = [torch.empty_like(padded) for _ in range(w)]
        dist.all_gather(parts, padded)
        full = torch.stack(parts, dim=1).reshape(per * w, *x.shape[1:])  # row i*W + r = rank r's i-th
        out.append(full[:n].cpu())
    return tuple(out)


def shard_range(n: int) -> Tuple[int, int]:
    """This rank's contiguous block of ``n`` items (teacher-cache shards)."""
    per = -(-n // world_size())
    return min(n, rank() * per), min(n, (rank() + 1) * per)


class StudentForward(nn.Module):
    """What DDP wraps: the student's embedding and the feature maps its losses need."""

    def __init__(self, model: nn.Module, stages: Sequence[int]):
        super().__init__()
        self.model, self.stages = model, tuple(stages)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[int, torch.Tensor]]:
        from .losses.combine import collect_features

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

    from .config import dump_yaml

    if resume is not None:
        from .checkpoint import load_checkpoint
        from .config import make_config

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
