"""Asymmetric retrieval: queries embedded by a student (or the exported file a phone runs) against a
gallery that another model embedded (the server's index, embedded once by the teacher).

``evaluate_asymmetric(query, gallery_model, data)`` (``asymmetric_eval.py``) / ``mdistill eval QUERY
--gallery-model SPEC``. This module is the part the export gate shares, below ``export``. The two spaces meet only where training tied them (the ``absolute`` loss): the student's checkpoint
records that loss's projection (when the embedding sizes differ) and its centre (``center=true``:
the server's index is centred by the same vector), and both are applied here, as in training's
``asymmetric/recall@K``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F

from .errors import ConfigError
from .evaluate import Metrics, retrieval_metrics
from .losses import BRIDGE_LOSSES


@dataclass
class Bridge:
    """What the student's training recorded to meet the gallery model's space."""

    projection: Optional[torch.Tensor] = None  # (D_gallery, D_query), the absolute loss's
    centre: Optional[torch.Tensor] = None  # (D_gallery,), the absolute loss's running mean

    def queries(self, q: torch.Tensor) -> torch.Tensor:
        q = F.normalize(q.float(), dim=1)
        return F.normalize(q @ self.projection.T, dim=1) if self.projection is not None else q

    def gallery(self, g: torch.Tensor) -> torch.Tensor:
        g = F.normalize(g.float(), dim=1)
        return F.normalize(g - self.centre, dim=1) if self.centre is not None else g

    def describe(self) -> str:
        parts = [f"projection {tuple(self.projection.shape[::-1])}" if self.projection is not None else "",
                 "centred gallery" if self.centre is not None else ""]
        return ", ".join(p for p in parts if p) or "none"


def bridge_from_index(index: Optional[Dict]) -> Bridge:
    """The gallery side an exported model card records (``teacher_index``: the centre only; a query
    projection stays in the checkpoint)."""
    centre = (index or {}).get("gallery_centre")
    return Bridge(centre=torch.tensor(centre, dtype=torch.float32) if centre is not None else None)


def bridge_from_checkpoint(ckpt: Dict) -> Bridge:
    """The projection (of the first of ``absolute``, ``contrastive``, ``prototype`` that learnt one)
    and the absolute loss's centre from a student checkpoint (``objective`` holds the training
    objective's state; a loss's index is its place in ``losses.distill``)."""
    names = [str(s).split(":")[0] for s in (ckpt.get("losses") or {}).get("distill") or []]
    state = ckpt.get("objective") or {}
    projection = next((state[f"losses.{i}.projection.weight"] for i, n in enumerate(names)
                       if n in BRIDGE_LOSSES and f"losses.{i}.projection.weight" in state), None)
    index = names.index("absolute") if "absolute" in names else None
    if index is None:
        return Bridge(projection.float() if projection is not None else None)
    centre = state.get(f"losses.{index}.running_mean")
    initialised = state.get(f"losses.{index}.mean_initialized")
    if centre is not None and initialised is not None and not bool(initialised):
        centre = None  # a run stopped before its first batch: no centre was measured
    return Bridge(projection.float() if projection is not None else None, centre.float() if centre is not None else None)


def asymmetric_metrics(queries: torch.Tensor, gallery: torch.Tensor, labels: torch.Tensor, bridge: Bridge,
                       ks: Sequence[int] = (1, 2, 4, 8), who: str = "the query model",
                       gallery_who: str = "the gallery model", per_query: bool = False) -> Metrics:
    """Recall@K and MAP@R of ``queries`` (N, D_q) against ``gallery`` (N, D_g), the same N images,
    leave-one-out, after the bridge (``per_query``: each query's figures too, as ``retrieval_metrics``).
    Sizes no recorded projection joins are refused in one line."""
    q = bridge.queries(queries)
    if q.shape[1] != gallery.shape[1]:
        projected = f" (projected to {q.shape[1]} for the teacher it was distilled from)" if bridge.projection is not None else ""
        raise ConfigError(f"{who} embeds {queries.shape[1]} numbers{projected} and {gallery_who} {gallery.shape[1]}; no "
                          "recorded projection joins them (a student records one when its absolute loss meets a "
                          "teacher of another size): evaluate it against the teacher it was distilled from")
    return retrieval_metrics(q, labels, ks=ks, gallery=bridge.gallery(gallery), per_query=per_query)
