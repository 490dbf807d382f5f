"""Checkpoints: plain tensors and plain Python values only, written atomically, read with
``torch.load(..., weights_only=True)`` so a malicious pickle is refused rather than run."""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

from .errors import CheckpointError, MdistillError, StorageError
from .utils.io import atomic_path, free_mb, storage_error

FORMAT = "mobile_distill.checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, payload: Dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (a failure leaves the previous file, or none).

    Raises:
        StorageError: the disk is full, or the folder is read-only or forbidden.
    """
    payload = {"format": FORMAT, "version": VERSION, **payload}
    try:
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
    except OSError as e:
        error = storage_error(e, path)
        if error is None:
            raise
        raise error from None
    except RuntimeError:
        # torch's zip writer reports a failed write as "unexpected pos" / "file write failed", without errno
        needed = _nbytes(payload) / 1e6
        free = free_mb(Path(path).parent)  # the partial temporary file is gone by now
        if free < needed + 1:
            raise StorageError(f"no space left on the device for checkpoint {path}: it needs about {needed:,.1f} MB "
                               f"and {free:,.1f} MB are free there; free some space or write elsewhere") from None
        raise
    return Path(path)


def _nbytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


def load_checkpoint(path: str | Path) -> Dict[str, Any]:
    """Load and sanity-check a checkpoint.

    Raises:
        CheckpointError: missing file, unsafe pickle, corrupt file, or not a mobile_distill checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"refused to load {path}: it is not a plain-tensor checkpoint and could run code when "
            f"unpickled ({first[:200]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "model" not in ckpt:
        raise CheckpointError(f"{path} is not a mobile_distill checkpoint (no 'model' block)")
    return ckpt


def model_from_checkpoint(ckpt: Dict[str, Any], source: str = "checkpoint"):
    """Rebuild the ``EmbeddingNet`` a checkpoint describes and load its weights."""
    from .models import create_model

    info = ckpt["model"]
    try:
        model = create_model(
            info["arch"],
            embedding_dim=info["embedding_dim"] if info.get("head", True) else None,
            pretrained="none",
            image_size=info["image_size"],
        )
    except MdistillError as e:
        raise CheckpointError(f"{source} describes a model that cannot be built: {e}") from None
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(
            f"{source} does not fit architecture {info['arch']} (embedding {info['embedding_dim']}): "
            f"{str(e).splitlines()[0][:300]}"
        ) from None
    return model


def rng_state() -> Dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2])},
        "python": random.getstate(),
    }


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    keys = state["numpy"]["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy"]["pos"], 0, 0.0))
    random.setstate(_tuples(state["python"]))


def _tuples(x):
    # torch.load returns lists where random.getstate() had tuples.
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x
