"""Checks on embeddings that every stage shares (evaluation, the teacher's caches, opaque teachers)."""

from __future__ import annotations

import torch

from ..errors import DataError


def check_finite(embeddings, what: str) -> None:
    """Refuse embeddings with NaN or infinite entries (a diverged model, a corrupt file): any
    ranking of them is meaningless, and NaN similarities silently count as misses or hits."""
    if isinstance(embeddings, torch.Tensor):
        rows = ~torch.isfinite(embeddings.detach()).reshape(len(embeddings), -1).all(1)
    else:  # a NumPy array or a memory-mapped cache
        import numpy as np

        rows = torch.from_numpy(~np.isfinite(np.asarray(embeddings)).reshape(len(embeddings), -1).all(1))
    bad = int(rows.sum())
    if bad:
        first = ", ".join(str(i) for i in torch.nonzero(rows).flatten()[:5].tolist())
        raise DataError(f"{what}: {bad} of {len(rows)} rows contain NaN or infinity (first: row {first}); "
                        "a diverged model or a corrupt file. Retrain, or re-export the embeddings")
