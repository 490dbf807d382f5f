"""``evaluate_asymmetric``: a student checkpoint, or the exported file a phone runs, as the query
model against any gallery model on a data set (``mdistill eval QUERY --gallery-model SPEC``);
``evaluate_exported``: an exported file against its own gallery (``mdistill eval FILE``). It sits
above ``export`` (an exported query file runs in its own runtime and is described by the model card
embedded in it, so it can be checked away from its checkpoint); the bridge between the spaces is
``asymmetric.py``'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from .asymmetric import Bridge, asymmetric_metrics, bridge_from_checkpoint, bridge_from_index
from .errors import ConfigError
from .evaluate import retrieval_metrics


def _query_model(query: Path):
    """A student checkpoint or an exported file: (its training config, a function returning its
    bridge to the teacher's space, its input size, a function (N, S, S, 3) uint8 images -> (N, D)
    embeddings, a name for the log). An exported file describes itself through its embedded model
    card; its checkpoint is read only for a query projection, which the card does not carry."""
    from .checkpoint import load_checkpoint, model_from_checkpoint
    from .export import formats
    from .export.metadata import read_metadata
    from .export.prepare import InputSpec, embed

    if not is_exported(query):
        ckpt = load_checkpoint(query)
        net = model_from_checkpoint(ckpt, str(query)).eval()
        return (ckpt.get("config", {}), lambda: bridge_from_checkpoint(ckpt), int(ckpt["model"]["image_size"]),
                lambda images: embed(net, images), str(query))
    doc = read_metadata(query)
    if doc is None:
        raise ConfigError(f"{query} carries no mobile_distill metadata: its data set, input size and index "
                          "centre are unknown; evaluate the student checkpoint it was exported from instead")
    card, artifact = doc["model"], doc["artifact"]
    size = int(card["image_size"])
    module = formats.get(formats.format_of(query))
    spec = InputSpec(size, artifact["input"]["layout"].lower(), artifact["input"]["dtype"])
    config = {"data": (card.get("dataset") or {}).get("spec"), "eval_resize": float(card.get("eval_resize", 1.0))}
    return (config, lambda: _bridge_of_file(query, card), size, lambda images: module.run(query, spec, images),
            f"{query.name} ({module.RUNTIME})")


def _bridge_of_file(query: Path, card: Dict) -> Bridge:
    """The card's index centre; a query projection (a student whose embedding size differs from its
    teacher's) lives only in the checkpoint, so that checkpoint must still be the one exported."""
    from .checkpoint import load_checkpoint
    from .utils.io import file_digest

    index = card.get("teacher_index") or {}
    if not index.get("query_projection"):
        return bridge_from_index(index)
    source = card["source_checkpoint"]
    path = query.parent / source["path"]
    where = (f"{query.name} maps its queries to the teacher's space with a {tuple(index['query_projection'])} "
             f"projection that only its checkpoint holds")
    if not path.exists():
        raise ConfigError(f"{where}, and {path} is not there: put {source['file']} back at that path "
                          "(model.json's source_checkpoint.path), or evaluate the checkpoint itself")
    if file_digest(path) != source["sha256"]:
        raise ConfigError(f"{where}, and {path} has changed since the export (its sha256 differs from the "
                          "card's): export again from it, or evaluate the checkpoint itself")
    return bridge_from_checkpoint(load_checkpoint(path))


def is_exported(path) -> bool:
    from .export.manifest import MODEL_SUFFIXES  # tested equal to the exporters' registered suffixes

    return Path(path).suffix.lower() in MODEL_SUFFIXES


def _embed_split(query: Path, data_spec: Optional[str], split: str, log):
    from .data import create_dataset
    from .evaluate import _split
    from .runtime.images import load_images

    if not query.exists():
        raise ConfigError(f"query model not found: {query}")
    cfg, bridge, query_size, embed_queries, name = _query_model(query)
    data = create_dataset(data_spec or cfg.get("data") or "emoji", progress=False)
    samples = _split(data, split)[0]
    log(f"embedding {len(samples)} queries with {name}")
    images = load_images(samples, query_size, data.name, float(cfg.get("eval_resize", 1.0)))
    queries = torch.from_numpy(np.asarray(embed_queries(images), dtype=np.float32))
    return bridge, data, samples, queries, torch.tensor([y for _, y in samples])


def evaluate_exported(path, data_spec: Optional[str] = None, split: str = "test", log=lambda _: None) -> Dict:
    """Recall@K and MAP@R of an exported file (run in its own runtime) on a data set's split, each
    image a query against the others as the file embeds them: what the phone's file retrieves on
    its own, over the whole split rather than the export gate's sample (default: the data set its
    student was trained on)."""
    _, data, _, embeddings, labels = _embed_split(Path(path), data_spec, split, log)
    return retrieval_metrics(embeddings, labels, ks=data.recall_ks)


def evaluate_asymmetric(query, gallery_model: str, data_spec: Optional[str] = None, gallery_weights: str = "",
                        split: str = "test", log=lambda _: None) -> Dict:
    """Asymmetric Recall@K / MAP@R of a student checkpoint or exported file (``query``) against any
    gallery model ``teacher_sources.load_teacher`` takes, on a data set's split (default: the
    student's); also each side's own symmetric figures, for scale.

    Returns:
        ``{"asymmetric": Metrics, "query": Metrics, "gallery": Metrics, "bridge": str, ...}``.
    """
    from .export.prepare import embed
    from .runtime.images import load_images
    from .teacher_sources import TeacherOptions, load_teacher

    query = Path(query)
    bridge_of_query, data, samples, queries, labels = _embed_split(query, data_spec, split, log)
    bridge = bridge_of_query()  # before the gallery's embedding: a missing checkpoint fails fast
    source = load_teacher(gallery_model, TeacherOptions(weights=gallery_weights))
    size = int(source.model.image_size)
    log(f"embedding the {len(samples)}-image gallery with {gallery_model} at {size} px")
    gallery = torch.from_numpy(embed(source.model, load_images(samples, size, data.name)))
    asym = asymmetric_metrics(queries, gallery, labels, bridge, data.recall_ks, str(query), gallery_model)
    return {"asymmetric": asym,
            "query": retrieval_metrics(queries, labels, ks=data.recall_ks),
            "gallery": retrieval_metrics(gallery, labels, ks=data.recall_ks),
            "bridge": bridge.describe(), "dataset": data.name, "split": split,
            "query_model": str(query), "gallery_model": gallery_model}
