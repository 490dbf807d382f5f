"""The frozen teacher of a distillation run: loading, identity (checksum), and where its
outputs come from.

Four modes:
- ``augmented`` (default): the teacher runs on the very crop the student sees (at the teacher's
  resolution when it differs: cross-quality distillation). Consistent, and the slowest.
- ``augmented`` + cache (``teacher_cache=True``): every image has ``cache_views`` fixed, replayable
  augmented views (``data/views.py``); the teacher's embedding of each view is computed once and
  the student is trained on those views, so teaching stays consistent at the student's speed.
- ``clean``: the teacher runs on the un-augmented view of each image (eval transform), live.
- ``clean`` + cache: the ``clean`` embeddings computed once per image and read back every epoch.
Caches are memory-mapped ``.npy`` files keyed by the teacher's checksum, its input size, the
transform and the exact image list, so runs over the same images can share them.

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

from .. import distributed as dd
from ..data.base import Sample, load_image
from ..data.transforms import eval_transform
from ..errors import ConfigError
from ..losses import BRIDGE_LOSSES
from ..utils.checks import check_finite
from ..teacher_sources import TeacherOptions, load_teacher
from ..utils.io import atomic_path, remove_stale_temps, write_json_atomic
from ..utils.progress import bars_off

VIEWS = ("augmented", "clean")


class Teacher:
    """A frozen teacher in eval mode, without gradients: our checkpoint, a timm or torchvision
    model, a Python factory's module or an ONNX file (``teacher_sources.load_teacher``).

    Args:
        path: the teacher spec (a checkpoint path, ``timm:NAME``, ``tv:NAME``, ``py:mod:fn``, ``FILE.onnx``).
        samples: the training samples (labelled + unlabeled, dataset order) the student sees;
            needed for ``clean`` views and the cache.
        image_size: the teacher's input size (default: its checkpoint's).
        view: ``augmented`` or ``clean``.
    """

    def __init__(self, path: str | Path, samples: Sequence[Sample], device, image_size: Optional[int] = None,
                 view: str = "augmented", eval_resize: float = 1.0, dataset: str = "", dtype: str = "float32",
                 options: Optional[TeacherOptions] = None):
        if view not in VIEWS:
            raise ConfigError(f"teacher_view must be one of {', '.join(VIEWS)}, got {view!r}")
        self.path = Path(path)
        self.source = load_teacher(str(path), options)
        self.sha256 = self.source.digest  # a file's sha256, or a timm/torchvision/factory name + weights digest
        self.model = self.source.model.to(device, memory_format=torch.channels_last)
        self.info = self.source.info
        self.image_size = image_size or self.info["image_size"]
        self.samples, self.device, self.view, self.dataset = list(samples), device, view, dataset
        self.can_embed = self.source.kind != "embeddings"  # precomputed rows: no new images
        self.clean_transform = eval_transform(self.image_size, eval_resize) if self.can_embed else None
        self.cache: Optional[np.ndarray] = None  # (N, D) clean views or (N, V, D) replayed views
        if not self.can_embed:
            self.cache = self.model.rows_for([p for p, _ in self.samples])
        self.map_cache: Dict[int, np.ndarray] = {}  # stage -> (N, V, C, h, w) float16 (replayed views)
        # bfloat16 autocast: 1.6x faster teacher forwards on CPUs with AMX (cos >= 0.9995 to float32)
        self.autocast = dtype == "bfloat16"

    @property
    def embedding_dim(self) -> int:
        return self.model.embedding_dim

    @property
    def feature_info(self):
        return self.model.feature_info

    def record(self) -> Dict:
        """What a student's checkpoint stores about its teacher."""
        return {**self.source.record(), "path": str(self.path), "sha256": self.sha256, "arch": self.info["arch"],
                "embedding_dim": self.info["embedding_dim"], "image_size": self.image_size, "view": self.view,
                "cached": self.cache is not None, "cached_views": int(self.cache.shape[1]) if self.cache is not None
                and self.cache.ndim == 3 else 0, "dtype": "bfloat16" if self.autocast else "float32"}

    def _forward(self, images: torch.Tensor, stages: Sequence[int] = ()):
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            if not stages:
                return self.model(images).float(), {}
            from ..models.features import collect_features

            emb, maps = collect_features(self.model, images, stages)
            return emb.float(), {k: m.float() for k, m in maps.items()}

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, index: torch.Tensor, stages: Sequence[int] = (),
                 views: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Dict]:
        """Teacher embeddings (B, D_t) and ``{stage: map}`` for a batch of dataset indices
        (and, with a replayed-view cache, the view of each)."""
        if self.cache is not None and self.cache.ndim == 3:
            i, v = index.numpy(), views.numpy()
            rows = torch.from_numpy(np.asarray(self.cache[i, v])).to(self.device)  # (B, D_t)
            return rows, {s: torch.from_numpy(np.asarray(self.map_cache[s][i, v])).to(self.device).float()
                          for s in stages}
        if self.cache is not None:
            return torch.from_numpy(np.asarray(self.cache[index.numpy()])).to(self.device), {}
        if self.view == "clean" and not stages:
            return self._clean_embeddings(index), {}
        if self.view == "clean":
            images = torch.stack([self._clean_view(i) for i in index.tolist()])
        images = images.to(self.device, memory_format=torch.channels_last)
        if images.shape[-1] != self.image_size:
            images = _resize(images, self.image_size)
        return self._forward(images, stages)

    def _clean_view(self, i: int) -> torch.Tensor:
        return self.clean_transform(load_image(self.samples[i][0], self.dataset))  # (3, S, S)

    def _clean_embeddings(self, index: Sequence[int], progress: bool = False) -> torch.Tensor:
        from tqdm import tqdm

        rows = [self._forward(self._clean_view(i)[None].to(self.device, memory_format=torch.channels_last))[0]
                for i in tqdm(list(map(int, index)), desc="teacher cache", unit="img", disable=bars_off(progress), leave=False)]
        return torch.cat(rows)  # (B, D_t)

    def build_cache(self, cache_dir: Path, progress: bool = True) -> Path:
        """Compute (or reuse) the clean-view embedding of every training image; returns the file.

        The file name is keyed by the teacher's checksum and the exact list of images, so runs
        over the same images (other seeds, other losses) can share one cache directory.
        """
        if not self.can_embed:  # the rows were given: nothing to compute
            return Path(self.source.spec[len("embeddings:"):])
        key = "|".join([self.sha256, str(self.image_size), repr(self.clean_transform), str(self.autocast),
                        *(p for p, _ in self.samples)])
        n = len(self.samples)

        def compute():  # rank r embeds images r, r+W, ...
            mine = self._clean_embeddings(range(dd.rank(), n, dd.world_size()), progress and dd.is_main()).cpu()
            return dd.gather_interleaved(mine, n=n)[0]

        return self._load_or_build(Path(cache_dir), "teacher_cache", key, compute)

    def build_view_cache(self, views, cache_dir: Path, progress: bool = True, stages: Sequence[int] = (),
                         batch_size: int = 128) -> Path:
        """Compute (or reuse) the teacher's outputs on every replayed view (``data.views.ReplayedViews``)
        of every training image: embeddings (N, V, D) in float32 and, for feature-map losses (hint,
        attention), the maps of ``stages`` (N, V, C, h, w) in float16; read back by
        ``__call__(..., views=...)``. Returns the embeddings file."""
        stages = tuple(sorted(int(s) for s in stages))
        key = "|".join(["views", self.sha256, str(self.image_size), repr(views.transform), str(views.views),
                        str(views.seed), str(self.autocast), *(p for p, _ in self.samples)])
        tag = file_tag(key)
        cache_dir = Path(cache_dir)

        def files(wanted):
            return {"emb": cache_dir / f"teacher_views-{tag}.npy",
                    **{s: cache_dir / f"teacher_views-{tag}-stage{s}.npy" for s in wanted}}

        meta_path = cache_dir / f"teacher_views-{tag}.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        have = tuple(meta.get("stages", ())) if meta.get("key") == tag else None
        # One cache serves every loss combination: a run that needs maps the cache lacks rebuilds it
        # with the union of stages, so runs needing fewer maps (or none) reuse it as it is.
        stale = have is None or not set(stages) <= set(have) or not all(f.exists() for f in files(stages).values())
        if dd.broadcast_object(stale):  # rank 0 decides: every rank must join the build
            have = dd.broadcast_object(tuple(sorted(set(stages) | set(have or ()))))
            self._write_view_cache(views, files(have), have, progress, batch_size)
            if dd.is_main():
                write_json_atomic(meta_path, {"key": tag, "dataset": self.dataset, "teacher": str(self.path),
                                              "teacher_sha256": self.sha256, "images": len(self.samples),
                                              "views": views.views, "stages": list(have)})
            dd.barrier()
        loaded = files(stages)
        self.cache = np.load(loaded["emb"], mmap_mode="r")
        check_finite(self.cache, f"the teacher cache {loaded['emb']}")
        self.map_cache = {s: np.load(loaded[s], mmap_mode="r") for s in stages}
        return loaded["emb"]

    @torch.no_grad()
    def _write_view_cache(self, views, files: Dict, stages: Tuple[int, ...], progress: bool, batch_size: int) -> None:
        """Each rank computes a contiguous block of the (image, view) rows into its own shard;
        rank 0 merges the shards into the final files (one process: the block is everything)."""
        from contextlib import ExitStack

        from torch.utils.data import DataLoader
        from tqdm import tqdm

        n, v = len(self.samples), views.views
        lo, hi = dd.shard_range(n * v)
        keys = [(k // v, k % v) for k in range(lo, hi)]
        loader = DataLoader(views, batch_size=batch_size, sampler=keys)
        single = dd.world_size() == 1
        mine = files if single else {k: _shard_file(f, dd.rank()) for k, f in files.items()}
        for f in mine.values():
            remove_stale_temps(f)  # a killed build's partial files
        with ExitStack() as stack:  # every file appears complete or not at all
            tmp = {name: stack.enter_context(atomic_path(f)) for name, f in mine.items()}
            out: Dict = {}
            done = 0
            for images, _, _, _ in tqdm(loader, desc="teacher views", unit="batch",
                                        disable=bars_off(progress and dd.is_main()), leave=False):
                images = images.to(self.device, memory_format=torch.channels_last)
                if images.shape[-1] != self.image_size:
                    images = _resize(images, self.image_size)
                emb, maps = self._forward(images, stages)
                parts = {"emb": (emb, np.float32), **{s: (maps[s], np.float16) for s in stages}}
                for name, (x, dtype) in parts.items():
                    if name not in out:  # shapes are known after the first batch; rows are (image, view) pairs
                        shape = (n, v, *x.shape[1:]) if single else (hi - lo, *x.shape[1:])
                        out[name] = np.lib.format.open_memmap(tmp[name], mode="w+", dtype=dtype, shape=shape)
                    out[name].reshape(-1, *x.shape[1:])[done: done + len(x)] = x.cpu().numpy().astype(dtype)
                done += len(images)
            for arr in out.values():
                arr.flush()
            out.clear()
        dd.barrier()
        if not single and dd.is_main():
            _merge_shards(files, n, v, dd.world_size())
        dd.barrier()

    def _load_or_build(self, cache_dir: Path, prefix: str, key: str, compute) -> Path:
        tag = file_tag(key)
        path, meta_path = cache_dir / f"{prefix}-{tag}.npy", cache_dir / f"{prefix}-{tag}.json"
        fresh = path.exists() and meta_path.exists() and json.loads(meta_path.read_text()).get("key") == tag
        if not dd.broadcast_object(fresh):  # rank 0 decides: every rank must join the build
            with torch.no_grad():
                emb = compute()
            if dd.is_main():
                remove_stale_temps(path)
                with atomic_path(path) as tmp:
                    with open(tmp, "wb") as f:
                        np.save(f, emb.numpy().astype(np.float32))
                write_json_atomic(meta_path, {"key": tag, "dataset": self.dataset, "teacher": str(self.path),
                                              "teacher_sha256": self.sha256, "images": len(self.samples),
                                              "shape": list(emb.shape)})
            dd.barrier()
        self.cache = np.load(path, mmap_mode="r")
        check_finite(self.cache, f"the teacher cache {path}")
        return path


def _shard_file(path: Path, rank: int) -> Path:
    return path.with_name(f"{path.stem}.rank{rank}.npy")


def _merge_shards(files: Dict, n: int, v: int, world: int) -> None:
    """Concatenate the ranks' row blocks of each cache file into the final (N, V, ...) file."""
    for f in files.values():
        shards = [_shard_file(f, r) for r in range(world)]
        parts = [np.load(p, mmap_mode="r") for p in shards if p.exists()]
        remove_stale_temps(f)
        with atomic_path(f) as tmp:
            merged = np.lib.format.open_memmap(tmp, mode="w+", dtype=parts[0].dtype, shape=(n, v, *parts[0].shape[1:]))
            flat, start = merged.reshape(n * v, *parts[0].shape[1:]), 0
            for part in parts:
                flat[start: start + len(part)] = part
                start += len(part)
            if start != n * v:
                raise RuntimeError(f"teacher cache shards of {f.name} hold {start} of {n * v} rows")
            merged.flush()
            del merged, flat
        del parts
        for p in shards:
            p.unlink(missing_ok=True)


def file_tag(key: str) -> str:
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    return torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                                           align_corners=False)


def student_view(images: torch.Tensor, size: int) -> torch.Tensor:
    """The student's input: the same crop, downsampled when the teacher sees a larger one."""
    return images if images.shape[-1] == size else _resize(images, size)


def asymmetric_metrics(student, teacher: Teacher, objective, data, image_size: int, eval_resize: float,
                       device) -> Dict[str, float]:
    """Recall@K of student-embedded queries against the teacher-embedded test gallery
    (phone queries, server index), as ``asymmetric/recall@K`` and ``asymmetric/map@r``.

    The two spaces only meet where a loss ties the student's coordinates to the teacher's (the
    ``absolute``, ``contrastive`` and ``prototype`` losses); relational losses (relative, RKD, ...) leave them unrelated and this
    figure near chance. When the ``absolute`` loss centres its targets, the gallery is centred by
    the same running mean (a fixed transform the server applies to its index); when it learns a
    projection (different sizes), the queries go through it. Without an ``absolute`` loss and
    with different sizes there is no common space: nothing is returned.
    """
    from torch.utils.data import DataLoader

    from ..data import ImageDataset
    from ..evaluate import embed, retrieval_metrics

    absolute = next((loss for loss in objective.losses if getattr(loss, "name", "") == "absolute"), None)
    # the first loss that ties the coordinates and learnt a projection (absolute, contrastive, prototype)
    projection = next((p for p in (getattr(loss, "projection", None) for loss in objective.losses
                                   if getattr(loss, "name", "") in BRIDGE_LOSSES) if p is not None), None)
    loader = DataLoader(ImageDataset(data.test, eval_transform(image_size, eval_resize), data.name), batch_size=128)
    queries, labels = embed(student, loader, device, progress=False)
    t_loader = DataLoader(ImageDataset(data.test, teacher.clean_transform, data.name), batch_size=128)
    gallery, _ = embed(teacher.model, t_loader, device, progress=False)
    objective.eval()  # centring only reads its running mean in eval mode
    with torch.no_grad():
        if projection is not None:
            queries = projection(queries.to(device)).cpu()
        if absolute is not None and absolute.center:
            gallery = absolute.centred_targets(gallery.to(device)).cpu()
    if queries.shape != gallery.shape:
        return {}
    m = retrieval_metrics(queries, labels, ks=data.recall_ks, gallery=gallery)
    return {f"asymmetric/{k}": v for k, v in m.items() if k.startswith("recall@") or k == "map@r"}
