"""Retrieval evaluation: Recall@K, MAP@R and cross-domain Recall@K without an N x N matrix.

Protocol (CUB / Cars / SOP, Musgrave et al. 2020 "A Metric Learning Reality Check"): every
test item is a query once; the gallery is every *other* test item (leave-one-out). Queries
whose class has no other item are excluded from every metric, exactly as
pytorch-metric-learning's ``AccuracyCalculator`` does with ``ref_includes_query=True`` (its
"lone query labels": ``match_count - 1 <= 0``); they still act as gallery distractors for the
other queries, and a metric with no valid query is ``nan`` (PML's ``nan_accuracy``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .errors import ConfigError, DataError
from .utils.checks import check_finite  # noqa: F401  (re-exported: evaluate.check_finite)
from .utils.progress import bars_off

Metrics = Dict[str, float]


def retrieval_metrics(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ks: Sequence[int] = (1, 2, 4, 8),
    map_at_r: bool = True,
    chunk_size: int = 1024,
    domains: Optional[Sequence[str]] = None,
    gallery: Optional[torch.Tensor] = None,
    per_query: bool = False,
) -> Metrics:
    """Leave-one-out Recall@K and MAP@R under cosine similarity, computed in query chunks.

    Args:
        embeddings: (N, D) embeddings; L2-normalised here, so cosine ranking == Euclidean ranking.
        labels: (N,) integer class ids.
        ks: the K of Recall@K (a hit if any of the K nearest other items shares the label).
        map_at_r: also compute MAP@R: AP@R = (1/R) * sum_{i<=R} P(i) * rel(i), R = same-class others.
        chunk_size: queries per chunk; peak extra memory is about chunk_size * N * 4 bytes.
        domains: optional (N,) domain tags (e.g. emoji vendor); adds ``cross/A->B/recall@K``:
            queries of domain A against the gallery items of domain B only, for every A != B,
            and their mean over the pairs, ``cross/mean/recall@K``.
        gallery: optional (N, D) second embedding of the same N items for the gallery side
            (asymmetric retrieval: ``embeddings`` from the student embed the queries, ``gallery``
            from the teacher the index); item i is still never its own neighbour.
        per_query: also return ``per_query`` = ``{"recall@1": [0/1, ...], "map@r": [AP@R, ...]}``,
            in item order, to compare two models on the same queries by paired differences.

    Returns:
        ``recall@K`` (fractions in [0, 1]), ``map@r``, ``num_queries``, ``num_excluded`` and,
        with ``domains``, ``cross/A->B/recall@K`` and ``cross/A->B/num_queries``.

    Raises:
        ConfigError: on a non-positive K or chunk size.
        DataError: on fewer than two items or mismatched lengths.
    """
    ks, emb, emb_g = _checked(embeddings, labels, ks, chunk_size, gallery)
    n = emb.shape[0]
    # Dense class codes so per-class counts are a bincount rather than a dict.
    _, codes, counts = torch.unique(labels.cpu(), return_inverse=True, return_counts=True)
    codes = codes.to(emb.device)  # (N,)
    r_all = (counts.to(emb.device) - 1)[codes]  # (N,) R_i: other items of the same class
    valid = r_all > 0  # (N,) singleton classes are excluded (PML's lone queries)
    # Ranks beyond max(ks) and max R are never read, so topk stops there.
    k_needed = min(n - 1, max(ks[-1], int(r_all.max()) if map_at_r else 0))

    cross = _CrossDomain(domains, codes, n, ks) if domains is not None else None
    hits = torch.zeros(len(ks), dtype=torch.long)
    hit1 = torch.zeros(n, dtype=torch.bool, device=emb.device)  # (N,) each query's Recall@1
    # Per-query AP kept as N scalars (not neighbours) and summed once at the end, so the
    # float64 summation order and hence the result is bit-identical for any chunk_size.
    ap_all = torch.zeros(n, dtype=torch.float64, device=emb.device)  # (N,)
    ranks = torch.arange(1, k_needed + 1, device=emb.device, dtype=torch.float64)  # (k,)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        rows = torch.arange(stop - start, device=emb.device)
        sims = emb[start:stop] @ emb_g.T  # (c, N) float32; the only O(c*N) buffer
        sims[rows, rows + start] = float("-inf")  # leave-one-out: a query never retrieves itself
        # Ties: torch.topk on identical float32 input is deterministic, so equal similarities
        # always resolve the same way (no stable-index guarantee, but repeatable).
        nn_idx = sims.topk(k_needed, dim=1).indices  # (c, k)
        same = codes[nn_idx] == codes[start:stop, None]  # (c, k) bool relevance
        q_valid = valid[start:stop]  # (c,)
        # Recall@K from the rank of the nearest positive, counted against the whole gallery:
        # every other-class item at least as similar ranks ahead of it. Exact ties (identical
        # images in two classes) thus count against the query, whatever K is asked for; taking
        # topk's order instead made Recall@1 depend on the K list (topk breaks ties by k).
        same_all = codes[None, :] == codes[start:stop, None]  # (c, N)
        best_pos = sims.masked_fill(~same_all, float("-inf")).max(1).values  # (c,)
        first = ((sims >= best_pos[:, None]) & ~same_all).sum(1)  # (c,) rank-1 of the 1st hit
        for j, k in enumerate(ks):
            hits[j] += ((first < k) & q_valid).sum().cpu()
        hit1[start:stop] = first < 1
        if map_at_r:
            ap_all[start:stop] = _ap_at_r(sims, nn_idx, same_all, codes, codes[start:stop], r_all[start:stop], ranks)
        del same_all
        if cross is not None:
            cross.update(sims, start, stop)
        del sims, nn_idx, same  # free the chunk before the next matmul allocates

    return _summary(ks, hits, ap_all if map_at_r else None, valid, cross, hit1 if per_query else None)


def paired_standard_error(a: Sequence[float], b: Sequence[float]) -> float:
    """Standard error of mean(a) - mean(b) when both score the same queries (``per_query`` lists):
    the spread of the per-query differences, not of either score, which the queries' difficulty
    dominates. NaN for fewer than two queries."""
    d = torch.tensor(a, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)
    return d.std().item() / len(d) ** 0.5 if len(d) > 1 else float("nan")


def _summary(ks, hits, ap_all, valid, cross, hit1=None) -> Metrics:
    """The metrics from the per-K hit counts and per-query AP@R (``None``: not asked for); with
    ``hit1`` (each query's Recall@1), the scored queries' own figures too."""
    num_q = int(valid.sum())
    out: Metrics = {f"recall@{k}": (hits[j].item() / num_q if num_q else float("nan")) for j, k in enumerate(ks)}
    if ap_all is not None:
        out["map@r"] = ap_all[valid].sum().item() / num_q if num_q else float("nan")
        # its standard error over the queries: what model selection weighs a difference against
        out["map@r_se"] = ap_all[valid].std().item() / num_q ** 0.5 if num_q > 1 else float("nan")
    out["num_queries"] = num_q
    out["num_excluded"] = len(valid) - num_q
    if cross is not None:
        out.update(cross.result())
    if hit1 is not None:
        out["per_query"] = {"recall@1": hit1[valid].double().tolist(),
                            **({"map@r": ap_all[valid].tolist()} if ap_all is not None else {})}
    return out


def _checked(embeddings, labels, ks, chunk_size, gallery):
    """The sorted K list and the L2-normalised float32 query and gallery embeddings, or a one-line error."""
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1 or chunk_size < 1:
        raise ConfigError(f"recall ks must be positive integers and chunk_size >= 1, got {ks}, {chunk_size}")
    n = embeddings.shape[0]
    if embeddings.dim() != 2 or labels.shape != (n,):
        shapes = f"{tuple(embeddings.shape)} and {tuple(labels.shape)}"
        raise DataError(f"need embeddings (N, D) and labels (N,), got {shapes}")
    if n < 2:
        raise DataError(f"retrieval needs at least 2 test items, got {n}")
    check_finite(embeddings, "the embeddings")
    if gallery is not None:
        check_finite(gallery, "the gallery embeddings")
    emb = F.normalize(embeddings.detach().float(), dim=1)  # (N, D), float32 as documented
    if gallery is not None and gallery.shape != embeddings.shape:
        raise DataError(f"gallery embeddings {tuple(gallery.shape)} must match the queries {tuple(embeddings.shape)}")
    emb_g = emb if gallery is None else F.normalize(gallery.detach().float(), dim=1).to(emb.device)  # (N, D)
    return ks, emb, emb_g


def _ap_at_r(sims, nn_idx, same_all, codes, query_codes, r, ranks) -> torch.Tensor:
    """AP@R of a chunk of queries: (c,) from their similarities (c, N), top-k indices (c, k),
    same-class mask (c, N), and R per query (c,)."""
    # The same tie rule as Recall@K: among equal similarities, other-class items first.
    # That starts with which items are kept: topk keeps arbitrary members of a tie group
    # that straddles its cut, so re-select: everything above the cut value, then at the
    # cut value other-class items before same-class ones.
    cut = sims.gather(1, nn_idx[:, -1:])  # (c, 1)
    at_cut = sims == cut
    score = 3 * (sims > cut).float() + 2 * (at_cut & ~same_all).float() + (at_cut & same_all).float()
    nn_idx = score.topk(nn_idx.shape[1], dim=1).indices  # (c, k)
    del score, at_cut
    same = codes[nn_idx] == query_codes[:, None]
    vals = sims.gather(1, nn_idx)
    by_class = torch.sort(same.to(torch.int8), dim=1, stable=True).indices
    by_sim = torch.sort(vals.gather(1, by_class), dim=1, descending=True, stable=True).indices
    same = same.gather(1, by_class).gather(1, by_sim)
    rel = same & (ranks[None, :] <= r[:, None])  # (c, k) only the first R ranks count
    prec = rel.cumsum(1).double() / ranks  # (c, k) P(i)
    return (prec * rel).sum(1) / r.clamp(min=1)  # (c,) AP@R


class _CrossDomain:
    """Accumulates Recall@K of domain-A queries against domain-B gallery items, chunk by chunk."""

    def __init__(self, domains: Sequence[str], codes: torch.Tensor, n: int, ks: Sequence[int]):
        if len(domains) != n:
            raise DataError(f"got {len(domains)} domain tags for {n} embeddings")
        self.names = sorted(set(domains))
        lookup = {d: i for i, d in enumerate(self.names)}
        dev = codes.device
        self.dom = torch.tensor([lookup[d] for d in domains], device=dev)  # (N,)
        self.codes, self.ks = codes, list(ks)
        nd, nc = len(self.names), int(codes.max()) + 1
        self.cols = [torch.nonzero(self.dom == b).squeeze(1) for b in range(nd)]  # gallery per domain
        # has[b, c]: class c has an item in domain b; otherwise a query of class c has no
        # possible hit in b and is excluded for that pair, like a singleton overall.
        self.has = torch.stack([torch.bincount(codes[c], minlength=nc) > 0 for c in self.cols])
        self.hits = torch.zeros(nd, nd, len(self.ks), dtype=torch.long)  # [A, B, K]
        self.nq = torch.zeros(nd, nd, dtype=torch.long)  # [A, B]

    def update(self, sims: torch.Tensor, start: int, stop: int) -> None:
        """Fold one chunk of query rows ``sims`` (c, N) into the per-pair counts."""
        q_dom, q_code = self.dom[start:stop], self.codes[start:stop]  # (c,)
        nd = len(self.names)
        for b, cols in enumerate(self.cols):
            q_ok = (q_dom != b) & self.has[b][q_code]  # (c,) queries that count for (A, b)
            if not bool(q_ok.any()):
                continue
            # index_select copies (c, |B|) at most: still bounded by the chunk, never N x N.
            sb = sims.index_select(1, cols)  # (c, |B|)
            same = self.codes[cols][None, :] == q_code[:, None]  # (c, |B|)
            # Same tie rule as the overall Recall@K: other-class items at least as similar as
            # the nearest positive rank ahead of it.
            best = sb.masked_fill(~same, float("-inf")).max(1).values  # (c,)
            first = ((sb >= best[:, None]) & ~same).sum(1)  # (c,)
            self.nq[:, b] += torch.bincount(q_dom[q_ok], minlength=nd).cpu()
            for j, k in enumerate(self.ks):
                self.hits[:, b, j] += torch.bincount(q_dom[q_ok & (first < k)], minlength=nd).cpu()

    def result(self) -> Metrics:
        out: Metrics = {}
        pairs = [(a, b) for a in range(len(self.names)) for b in range(len(self.names)) if a != b and self.nq[a, b]]
        for j, k in enumerate(self.ks):  # the mean over vendor pairs: one figure for a table column
            out[f"cross/mean/recall@{k}"] = (sum(self.hits[a, b, j].item() / self.nq[a, b].item() for a, b in pairs)
                                             / len(pairs) if pairs else float("nan"))
        for a, name_a in enumerate(self.names):
            for b, name_b in enumerate(self.names):
                if a == b:
                    continue
                nq = int(self.nq[a, b])
                for j, k in enumerate(self.ks):
                    out[f"cross/{name_a}->{name_b}/recall@{k}"] = self.hits[a, b, j].item() / nq if nq else float("nan")
                out[f"cross/{name_a}->{name_b}/num_queries"] = nq
        return out


def embed(
    model: torch.nn.Module,
    loader: Iterable,
    device: torch.device | str,
    progress: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Embed every batch of ``loader`` with ``model`` in eval mode.

    Args:
        model: maps images (B, C, H, W) to embeddings (B, D).
        loader: yields ``(images, labels, index)`` batches; ``index`` is the data-set position.
        device: where the model runs.
        progress: show a tqdm bar.

    Returns:
        embeddings (N, D) float32 on the CPU and labels (N,) long, both sorted by ``index`` so
        that the order matches the data set (and its domain tags) whatever the sampler did.
    """
    from tqdm.auto import tqdm  # local: only the CLI path needs it

    was_training = model.training
    model.eval()
    embs, labs, idxs = [], [], []
    try:
        with torch.no_grad():
            for images, labels, index in tqdm(loader, desc="embed", disable=bars_off(progress), leave=False):
                images = images.to(device, non_blocking=True, memory_format=torch.channels_last)
                out = model(images)  # (B, D)
                embs.append(out.float().cpu())
                labs.append(torch.as_tensor(labels).long().cpu())
                idxs.append(torch.as_tensor(index).long().cpu())
    finally:
        model.train(was_training)  # restore whatever mode the caller had (e.g. mid-training eval)
    if not embs:
        raise DataError("the evaluation loader yielded no batches")
    order = torch.cat(idxs).argsort()
    return torch.cat(embs)[order], torch.cat(labs)[order]


def _fmt(key: str, value: float) -> str:
    """Fractions (recall, MAP@R) as percentages with one decimal; counts as integers."""
    if isinstance(value, int) or key.endswith("num_queries") or key.endswith("num_excluded"):
        return str(int(value))
    if value != value:  # nan: no valid query
        return "n/a"
    if "recall@" in key or key == "map@r":
        return f"{100.0 * value:.1f}"
    return f"{value:.4g}"


def _table(header: Sequence[str], body: Sequence[Sequence[str]], title: Optional[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(r: Sequence[str]) -> str:  # first column left-aligned (names), numbers right-aligned
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    rows = [line(header), "  ".join("-" * w for w in widths), *map(line, body)]
    return "\n".join(([title] if title else []) + rows)


def format_table(metrics: Mapping[str, float], title: Optional[str] = None) -> str:
    """A two-column ``metric | value`` table; recall and MAP@R are shown in percent."""
    return _table(("metric", "value"), [(k, _fmt(k, v)) for k, v in metrics.items()], title)


def gap_closure(teacher: float, alone: float, distilled: float) -> float:
    """Share of the teacher-student gap that distillation closes: (distilled - alone) / (teacher - alone).

    1.0: the distilled student retrieves as well as the teacher; 0: no better than trained alone;
    ``nan`` when the student alone already matches or beats the teacher (no gap to close).
    """
    gap = teacher - alone
    return (distilled - alone) / gap if gap > 0 else float("nan")


def format_comparison(rows: Mapping[str, Mapping[str, float]], title: Optional[str] = None,
                      extra: Optional[Mapping[str, str]] = None) -> str:
    """Several models side by side: one row per model, columns recall@K (by K), map@r, then
    ``extra`` metrics (key -> column header, e.g. ``{"asymmetric/recall@1": "asym R@1"}``)."""
    keys = {k for m in rows.values() for k in m if k.startswith("recall@")}
    cols = sorted(keys, key=lambda k: int(k.split("@")[1]))
    if any("map@r" in m for m in rows.values()):
        cols.append("map@r")
    extra = {k: h for k, h in (extra or {}).items() if any(k in m for m in rows.values())}
    body = [(name, *(_fmt(c, m[c]) if c in m else "-" for c in [*cols, *extra])) for name, m in rows.items()]
    return _table(("model", *cols, *extra.values()), body, title)


# ---------------------------------------------------------------- evaluation jobs (used by the CLI)
def evaluate_samples(model, samples, image_size: int, device="cpu", ks: Sequence[int] = (1, 2, 4, 8),
                     dataset: str = "", domains=None, eval_resize: float = 1.0, batch_size: int = 128,
                     workers: int = 0, progress: bool = False, per_query: bool = False) -> Metrics:
    """Embed ``(path, label)`` samples with the eval transform and compute ``retrieval_metrics``."""
    from torch.utils.data import DataLoader

    from . import distributed as dd
    from .data import ImageDataset
    from .data.transforms import eval_transform

    # On several processes each rank embeds every W-th image; rank 0 scores the gathered set.
    shard = range(dd.rank(), len(samples), dd.world_size())
    loader = DataLoader(ImageDataset(samples, eval_transform(image_size, eval_resize), dataset),
                        batch_size=batch_size, num_workers=workers, sampler=shard)
    model.to(device, memory_format=torch.channels_last)
    embeddings, labels = embed(model, loader, device, progress=progress and dd.is_main())
    embeddings, labels = dd.gather_interleaved(embeddings, labels, n=len(samples))
    return dd.broadcast_object(retrieval_metrics(embeddings, labels, ks=ks, domains=domains, per_query=per_query)
                               if dd.is_main() else None)


def _split(data, split: str):
    if split == "test":
        return data.test, data.domains
    return data.train, None


def evaluate_checkpoint(checkpoint, data_spec: Optional[str] = None, image_size: Optional[int] = None,
                        split: str = "test", skip_bad_images: bool = False, progress: bool = True) -> Metrics:
    """Recall@K / MAP@R of a trained checkpoint on a data set split (default: its own data set)."""
    from .checkpoint import load_checkpoint, model_from_checkpoint
    from .data import create_dataset

    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt, str(checkpoint))
    cfg = ckpt.get("config", {})
    data = create_dataset(data_spec or cfg.get("data", "emoji"), skip_bad_images=skip_bad_images, progress=progress)
    samples, domains = _split(data, split)
    return evaluate_samples(model, samples, image_size or ckpt["model"]["image_size"], ks=data.recall_ks,
                            dataset=data.name, domains=domains, eval_resize=cfg.get("eval_resize", 1.0),
                            progress=progress)


def evaluate_pretrained(arch: str, data_spec: str, image_size: int, pretrained: str = "imagenet",
                        split: str = "test", skip_bad_images: bool = False, progress: bool = True) -> Metrics:
    """The untuned baseline: an architecture's pooled (pre-head) features, L2-normalised."""
    from .data import create_dataset
    from .models import create_model

    model = create_model(arch, embedding_dim=None, pretrained=pretrained, image_size=image_size)
    data = create_dataset(data_spec, skip_bad_images=skip_bad_images, progress=progress)
    samples, domains = _split(data, split)
    return evaluate_samples(model, samples, image_size, ks=data.recall_ks, dataset=data.name,
                            domains=domains, progress=progress)


def evaluate_teacher(spec: str, data_spec: str, image_size: Optional[int] = None, weights: str = "",
                     split: str = "test", skip_bad_images: bool = False, progress: bool = True) -> Metrics:
    """What a person starts from: any teacher ``teacher_sources.load_teacher`` takes (a checkpoint,
    ``timm:NAME``, ``tv:NAME``, ``py:mod:fn``, ``FILE.onnx``), untuned, on a data set's split."""
    from .data import create_dataset
    from .teacher_sources import TeacherOptions, load_teacher

    source = load_teacher(spec, TeacherOptions(weights=weights, image_size=image_size or 0))
    data = create_dataset(data_spec, skip_bad_images=skip_bad_images, progress=progress)
    samples, domains = _split(data, split)
    return evaluate_samples(source.model, samples, source.model.image_size, ks=data.recall_ks, dataset=data.name,
                            domains=domains, progress=progress)


def evaluate_embeddings(path, data_spec: str, split: str = "test", skip_bad_images: bool = False) -> Metrics:
    """Recall@K / MAP@R of precomputed embeddings (``.npy``, rows in the split's data-set order),
    e.g. the per-format embeddings ``mdistill bench`` saves."""
    import numpy as np

    from .data import create_dataset

    path = Path(path)
    if not path.is_file():
        raise DataError(f"embeddings file not found: {path}")
    try:
        emb = np.load(path)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path} as a .npy array: {str(e).splitlines()[0][:200]}") from None
    data = create_dataset(data_spec, skip_bad_images=skip_bad_images, progress=False)
    samples, domains = _split(data, split)
    if emb.ndim != 2 or emb.shape[0] != len(samples):
        raise DataError(f"{path} holds {tuple(emb.shape)}, expected ({len(samples)}, D): one row per {split} image")
    labels = torch.tensor([y for _, y in samples])
    return retrieval_metrics(torch.from_numpy(emb.astype(np.float32)), labels, ks=data.recall_ks, domains=domains)
