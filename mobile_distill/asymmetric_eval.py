"""``evaluate_asymmetric``: a student checkpoint, or the exported file a phone runs, as the query
model against any gallery model on a data set (``mdistill eval QUERY --gallery-model SPEC``);
``evaluate_exported``: an exported file against its own gallery (``mdistill eval FILE``). It sits
above ``export`` (an exported query file runs in its own runtime, traced to its checkpoint through
its model card); the bridge between the spaces is ``asymmetric.py``'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from .asymmetric import asymmetric_metrics, bridge_from_checkpoint
from .errors import ConfigError
from .evaluate import retrieval_metrics


def _query_model(query: Path):
    """A student checkpoint or an exported file: (its checkpoint dict, its input size, a function
    (N, S, S, 3) uint8 images -> (N, D) embeddings, a name for the log)."""
    from .checkpoint import load_checkpoint, model_from_checkpoint
    from .export import formats
    from .export.metadata import read_metadata
    from .export.prepare import InputSpec, embed

    if not is_exported(query):
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


def is_exported(path) -> bool:
    from .export.manifest import MODEL_SUFFIXES  # tested equal to the exporters' registered suffixes

    return Path(path).suffix.lower() in MODEL_SUFFIXES


def _embed_split(query: Path, data_spec: Optional[str], split: str, log):
    from .data import create_dataset
    from .evaluate import _split
    from .runtime.images import load_images

    if not query.exists():
        raise ConfigError(f"query model not found: {query}")
    ckpt, query_size, embed_queries, name = _query_model(query)
    cfg = ckpt.get("config", {})
    data = create_dataset(data_spec or cfg.get("data", "emoji"), progress=False)
    samples = _split(data, split)[0]
    log(f"embedding {len(samples)} queries with {name}")
    images = load_images(samples, query_size, data.name, float(cfg.get("eval_resize", 1.0)))
    queries = torch.from_numpy(np.asarray(embed_queries(images), dtype=np.float32))
    return ckpt, data, samples, queries, torch.tensor([y for _, y in samples])


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
    ckpt, data, samples, queries, labels = _embed_split(query, data_spec, split, log)
    source = load_teacher(gallery_model, TeacherOptions(weights=gallery_weights))
    size = int(source.model.image_size)
    log(f"embedding the {len(samples)}-image gallery with {gallery_model} at {size} px")
    gallery = torch.from_numpy(embed(source.model, load_images(samples, size, data.name)))
    bridge = bridge_from_checkpoint(ckpt)
    asym = asymmetric_metrics(queries, gallery, labels, bridge, data.recall_ks, str(query), gallery_model)
    return {"asymmetric": asym,
            "query": retrieval_metrics(queries, labels, ks=data.recall_ks),
            "gallery": retrieval_metrics(gallery, labels, ks=data.recall_ks),
            "bridge": bridge.describe(), "dataset": data.name, "split": split,
            "query_model": str(query), "gallery_model": gallery_model}
