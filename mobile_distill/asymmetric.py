"""Asymmetric retrieval: queries embedded by a student (or the exported file a phone runs) against a
gallery that another model embedded (the server's index, embedded once by the teacher).

``evaluate_asymmetric(query, gallery_model, data)`` / ``mdistill eval QUERY --gallery-model SPEC``.
The two spaces meet only where training tied them (the ``absolute`` loss): the student's checkpoint
records that loss's projection (when the embedding sizes differ) and its centre (``center=true``:
the server's index is centred by the same vector), and both are applied here, as in training's
``asymmetric/recall@K``. An exported query file is traced to its checkpoint through its model card.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
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
                       gallery_who: str = "the gallery model") -> Metrics:
    """Recall@K and MAP@R of ``queries`` (N, D_q) against ``gallery`` (N, D_g), the same N images,
    leave-one-out, after the bridge. Sizes no recorded projection joins are refused in one line."""
    q = bridge.queries(queries)
    if q.shape[1] != gallery.shape[1]:
        projected = f" (projected to {q.shape[1]} for the teacher it was distilled from)" if bridge.projection is not None else ""
        raise ConfigError(f"{who} embeds {queries.shape[1]} numbers{projected} and {gallery_who} {gallery.shape[1]}; no "
                          "recorded projection joins them (a student records one when its absolute loss meets a "
                          "teacher of another size): evaluate it against the teacher it was distilled from")
    return retrieval_metrics(q, labels, ks=ks, gallery=bridge.gallery(gallery))


def _query_model(query: Path):
    """A student checkpoint or an exported file: (its checkpoint dict, its input size, a function
    (N, S, S, 3) uint8 images -> (N, D) embeddings, a name for the log)."""
    from .checkpoint import load_checkpoint, model_from_checkpoint
    from .export import formats
    from .export.api import embed
    from .export.metadata import read_metadata
    from .export.prepare import InputSpec

    if query.suffix.lower() not in (".onnx", ".tflite", ".mlpackage"):
        ckpt = load_checkpoint(query)
        net = model_from_checkpoint(ckpt, str(query)).eval()
        return ckpt, int(ckpt["model"]["image_size"]), lambda images: embed(net, images), str(query)
    doc = read_metadata(query)
    if doc is None:
        raise ConfigError(f"{query} carries no mobile_distill metadata: its student checkpoint (for the "
                          "projection and centre) cannot be found")
    ckpt = load_checkpoint(query.parent / doc["model"]["source_checkpoint"]["path"])
    size, artifact = int(doc["model"]["image_size"]), doc["artifact"]
    module = formats.get(formats.format_of(query))
    spec = InputSpec(size, artifact["input"]["layout"].lower(), artifact["input"]["dtype"])
    return ckpt, size, lambda images: module.run(query, spec, images), f"{query.name} ({module.RUNTIME})"


def evaluate_asymmetric(query, gallery_model: str, data_spec: Optional[str] = None, gallery_weights: str = "",
                        split: str = "test", log=lambda _: None) -> Dict:
    """Asymmetric Recall@K / MAP@R of a student checkpoint or exported file (``query``) against any
    gallery model ``teacher_sources.load_teacher`` takes, on a data set's split (default: the
    student's); also each side's own symmetric figures, for scale.

    Returns:
        ``{"asymmetric": Metrics, "query": Metrics, "gallery": Metrics, "bridge": str, ...}``.
    """
    from .data import create_dataset
    from .evaluate import _split
    from .export.api import embed
    from .runtime.images import load_images
    from .teacher_sources import TeacherOptions, load_teacher

    query = Path(query)
    if not query.exists():
        raise ConfigError(f"query model not found: {query}")
    ckpt, query_size, embed_queries, name = _query_model(query)
    cfg = ckpt.get("config", {})
    data = create_dataset(data_spec or cfg.get("data", "emoji"), progress=False)
    samples = _split(data, split)[0]
    log(f"embedding {len(samples)} queries with {name}")
    images = load_images(samples, query_size, data.name, float(cfg.get("eval_resize", 1.0)))
    queries = torch.from_numpy(np.asarray(embed_queries(images), dtype=np.float32))
    source = load_teacher(gallery_model, TeacherOptions(weights=gallery_weights))
    size = int(source.model.image_size)
    log(f"embedding the {len(samples)}-image gallery with {gallery_model} at {size} px")
    gallery = torch.from_numpy(embed(source.model, load_images(samples, size, data.name)))
    labels = torch.tensor([y for _, y in samples])
    bridge = bridge_from_checkpoint(ckpt)
    asym = asymmetric_metrics(queries, gallery, labels, bridge, data.recall_ks, str(query), gallery_model)
    return {"asymmetric": asym,
            "query": retrieval_metrics(queries, labels, ks=data.recall_ks),
            "gallery": retrieval_metrics(gallery, labels, ks=data.recall_ks),
            "bridge": bridge.describe(), "dataset": data.name, "split": split,
            "query_model": str(query), "gallery_model": gallery_model}
