"""The frozen teacher of a distillation run: loading, identity (checksum), and where its
outputs come from.

Three modes, from exact to fast:
- ``augmented`` (default): the teacher runs on the very crop the student sees (at the teacher's
  resolution when it differs: cross-quality distillation).
- ``clean``: the teacher runs on the un-augmented view of each image (eval transform), live.
- cached (``teacher_cache=True``): the ``clean`` embeddings computed once per image into a
  memory-mapped ``.npy`` in the run directory, keyed by data set and teacher checksum, and read
  back every epoch.

A clean-view embedding is defined as the teacher run on that one image alone (a batch of 1):
batched convolutions round differently for different batch compositions, and Adam turns such
1e-7 differences into lr-sized weight differences, so only a per-image definition makes the
cached and the live runs bit-identical.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from .checkpoint import load_checkpoint, model_from_checkpoint
from .data.base import Sample, load_image
from .data.transforms import eval_transform
from .errors import ConfigError
from .utils.io import atomic_path, file_digest, write_json_atomic

VIEWS = ("augmented", "clean")


class Teacher:
    """A frozen ``EmbeddingNet`` from a checkpoint, in eval mode, without gradients.

    Args:
        path: teacher checkpoint.
        samples: the training samples (labelled + unlabeled, dataset order) the student sees;
            needed for ``clean`` views and the cache.
        image_size: the teacher's input size (default: its checkpoint's).
        view: ``augmented`` or ``clean``.
    """

    def __init__(self, path: str | Path, samples: Sequence[Sample], device, image_size: Optional[int] = None,
                 view: str = "augmented", eval_resize: float = 1.0, dataset: str = ""):
        if view not in VIEWS:
            raise ConfigError(f"teacher_view must be one of {', '.join(VIEWS)}, got {view!r}")
        self.path = Path(path)
        ckpt = load_checkpoint(self.path)
        self.sha256 = file_digest(self.path)
        self.model = model_from_checkpoint(ckpt, f"teacher {self.path}").to(device, memory_format=torch.channels_last)
        self.model.eval().requires_grad_(False)
        self.info = ckpt["model"]
        self.image_size = image_size or self.info["image_size"]
        self.samples, self.device, self.view, self.dataset = list(samples), device, view, dataset
        self.clean_transform = eval_transform(self.image_size, eval_resize)
        self.cache: Optional[np.ndarray] = None

    @property
    def embedding_dim(self) -> int:
        return self.model.embedding_dim

    @property
    def feature_info(self):
        return self.model.feature_info

    def record(self) -> Dict:
        """What a student's checkpoint stores about its teacher."""
        return {"path": str(self.path), "sha256": self.sha256, "arch": self.info["arch"],
                "embedding_dim": self.info["embedding_dim"], "image_size": self.image_size, "view": self.view,
                "cached": self.cache is not None}

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, index: torch.Tensor, stages: Sequence[int] = ()) -> Tuple[torch.Tensor, Dict]:
        """Teacher embeddings (B, D_t) and ``{stage: map}`` for a batch of dataset indices."""
        if self.cache is not None:
            return torch.from_numpy(np.asarray(self.cache[index.numpy()])).to(self.device), {}
        if self.view == "clean" and not stages:
            return self._clean_embeddings(index), {}
        if self.view == "clean":
            images = torch.stack([self._clean_view(i) for i in index.tolist()])
        images = images.to(self.device, memory_format=torch.channels_last)
        if images.shape[-1] != self.image_size:
            images = _resize(images, self.image_size)
        if not stages:
            return self.model(images), {}
        from .losses.combine import collect_features

        return collect_features(self.model, images, stages)

    def _clean_view(self, i: int) -> torch.Tensor:
        return self.clean_transform(load_image(self.samples[i][0], self.dataset))  # (3, S, S)

    def _clean_embeddings(self, index: Sequence[int], progress: bool = False) -> torch.Tensor:
        from tqdm import tqdm

        rows = [self.model(self._clean_view(i)[None].to(self.device, memory_format=torch.channels_last))
                for i in tqdm(list(map(int, index)), desc="teacher cache", unit="img", disable=not progress, leave=False)]
        return torch.cat(rows)  # (B, D_t)

    def build_cache(self, cache_dir: Path, progress: bool = True) -> Path:
        """Compute (or reuse) the clean-view embedding of every training image; returns the file.

        The file name is keyed by the teacher's checksum and the exact list of images, so runs
        over the same images (other seeds, other losses) can share one cache directory.
        """
        key = "|".join([self.sha256, str(self.image_size), repr(self.clean_transform), *(p for p, _ in self.samples)])
        tag = file_tag(key)
        cache_dir = Path(cache_dir)
        path, meta_path = cache_dir / f"teacher_cache-{tag}.npy", cache_dir / f"teacher_cache-{tag}.json"
        if not (path.exists() and meta_path.exists() and json.loads(meta_path.read_text()).get("key") == tag):
            with torch.no_grad():
                emb = self._clean_embeddings(range(len(self.samples)), progress).cpu()
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, emb.numpy().astype(np.float32))
            write_json_atomic(meta_path, {"key": tag, "dataset": self.dataset, "teacher": str(self.path), "teacher_sha256": self.sha256,
                                          "images": len(self.samples), "dim": int(emb.shape[1])})
        self.cache = np.load(path, mmap_mode="r")
        return path


def file_tag(key: str) -> str:
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    return torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                                           align_corners=False)


def student_view(images: torch.Tensor, size: int) -> torch.Tensor:
    """The student's input: the same crop, downsampled when the teacher sees a larger one."""
    return images if images.shape[-1] == size else _resize(images, size)
