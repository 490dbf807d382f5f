"""One recipe on many processes: PyTorch's own ``torch.distributed``, launched by torchrun.

Nothing here launches or communicates on its own: torchrun (or SLURM's ``srun``) starts the
processes and sets the environment, ``init_distributed`` joins the process group the way timm's
``init_distributed_device`` does (nccl on CUDA, gloo on CPU), and the rest are small helpers the
training loop calls:

- ``gather_rows``: all-gathers a batch across ranks; the local slice keeps its gradient, scaled by
  the world size so that DDP's gradient *average* equals the gradient of the loss on the whole
  global batch (pytorch-metric-learning's ``DistributedLossWrapper`` keeps the local slice the
  same way).
- rank-0 helpers (``is_main``, ``broadcast_object``) and ``gather_interleaved`` for sharded
  evaluation.

BatchNorm statistics are per rank (each rank normalises its own P/W classes); ``sync_bn`` makes
them global on CUDA (torch's SyncBatchNorm has no CPU kernel).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Optional, Tuple

import torch
import torch.distributed as dist

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


def shutdown(sync: bool = True) -> None:
    """Leave the process group. ``sync``: first wait for every rank, so none tears gloo's
    connections down while a peer still uses them (a rank then aborted with "terminate called
    without an active exception", once, on a loaded 2-core host); after an error, leave at once (the
    other ranks may never get there)."""
    if dist.is_initialized():
        if sync and world_size() > 1:
            dist.barrier()
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
