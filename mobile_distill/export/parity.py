"""The parity gate every format shares: an exported file must embed and retrieve like PyTorch.

Figures (on the same real test images; every one is kept in the report):
- per-image cosine between the exported and the PyTorch embedding (min / mean), max abs difference;
- Recall@1 of both, and its drop (symmetric: both sides of the search run the exported file);
- **asymmetric** Recall@1: exported-file queries against the PyTorch-embedded gallery, what a
  phone sees when the server index stays float; its drop is against PyTorch's own Recall@1;
- top-1 neighbour agreement: strict (the same nearest gallery image as PyTorch), by class (a
  neighbour of the same class), and **epsilon-tolerant**: a different neighbour counts as agreeing
  when PyTorch scores it within ``agreement_eps`` cosine of its own top-1. Near-tied neighbours
  swap under any rounding without retrieval changing, so the strict figures under-state parity.
What gates depends on the precision family (defaults in ``Thresholds``; reasons in docs/export.md):
float32 by the minimum cosine (the same program must give the same numbers), float16 and the
int8 family by what a user loses: both Recall@1 drops and the epsilon-tolerant agreement, with a
loose cosine floor on float16 to catch a broken conversion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ExportError  # noqa: F401 (re-exported: export.parity.ExportError)
from .config import Thresholds  # noqa: F401 (re-exported)

INT8_PRECISIONS = ("int8", "int16act", "dynamic_int8", "weight_int8")  # int8 weights: one family


@dataclass
class ServerGallery:
    """A gallery another model embedded (the teacher: the server's index) of the gate's images, and
    the bridge the student's training recorded (``asymmetric.Bridge``); a compatible student's
    queries are gated on how they search it."""

    embeddings: torch.Tensor  # (N, D_gallery), the same images in the same order as the gate's
    bridge: object
    name: str

    def recall_at_1(self, queries: np.ndarray, labels: np.ndarray, hits: bool = False):
        """In points; ``hits``: also each query's hit, as ``recall_at_1`` below."""
        from ..asymmetric import asymmetric_metrics

        m = asymmetric_metrics(torch.as_tensor(queries).float(), self.embeddings, torch.as_tensor(labels),
                               self.bridge, ks=(1,), who="the student", gallery_who=self.name, per_query=hits)
        return (100 * float(m["recall@1"]), m["per_query"]["recall@1"]) if hits else 100 * float(m["recall@1"])


@dataclass
class ParityResult:
    passed: bool
    figures: Dict[str, float]
    failures: List[str] = field(default_factory=list)


def mean_pairwise_cosine(emb: np.ndarray) -> float:
    """Mean cosine similarity between different rows (1.0 = every image maps to the same point)."""
    e = F.normalize(torch.as_tensor(emb, dtype=torch.float64), dim=1)
    n = e.shape[0]
    s = e.sum(0)
    return float(((s @ s) - n) / max(n * (n - 1), 1))


def check_not_degenerate(emb: np.ndarray, thresholds: Thresholds, what: str = "the PyTorch model") -> Optional[str]:
    """A message when ``emb`` is collapsed (a parity check on it would pass trivially), else None."""
    if emb.shape[0] < 2:
        return f"parity needs at least 2 images, got {emb.shape[0]}"
    mpc = mean_pairwise_cosine(emb)
    if not np.isfinite(mpc) or mpc >= thresholds.degenerate_cos:
        return (f"{what} is degenerate: its embeddings of {emb.shape[0]} different images are nearly identical "
                f"(mean pairwise cosine {mpc:.5f} >= {thresholds.degenerate_cos}); an untrained network or "
                "untouched BatchNorm statistics do this. Train the model first.")
    return None


def _top1(emb: torch.Tensor):
    """Cosine similarities (N, N) between the items (item i never its own neighbour), and each
    item's nearest other item."""
    e = F.normalize(emb.float(), dim=1)
    sims = e @ e.T
    sims.fill_diagonal_(-float("inf"))
    return sims, sims.argmax(1)


def recall_at_1(emb: np.ndarray, labels: np.ndarray, gallery: Optional[np.ndarray] = None, hits: bool = False):
    """Recall@1 from the same function as `mdistill eval` (so the figures agree to the last query);
    with ``gallery``, of ``emb`` queries against that embedding of the same images. ``hits``: also
    each query's hit (1.0 or 0.0), for the error of a drop paired over the same queries."""
    from ..evaluate import retrieval_metrics

    g = None if gallery is None else torch.as_tensor(gallery)
    m = retrieval_metrics(torch.as_tensor(emb).float(), torch.as_tensor(labels), ks=(1,), map_at_r=False,
                          gallery=g, per_query=hits)
    return (float(m["recall@1"]), m["per_query"]["recall@1"]) if hits else float(m["recall@1"])


def paired_se(a: list, b: list) -> float:
    """Standard error (in points) of Recall@1(a) - Recall@1(b) over the same queries: the gate's
    drops are measured on a sample of the test images, and this is how far that sample moves them."""
    from ..evaluate import paired_standard_error

    return 100 * paired_standard_error(a, b)


def compare(reference: np.ndarray, exported: np.ndarray, labels: np.ndarray, eps: float = 0.01,
            server: Optional[ServerGallery] = None) -> Dict[str, float]:
    """Parity figures of ``exported`` against ``reference`` embeddings of the same images (and, with
    ``server``, of both as queries against the teacher-embedded gallery)."""
    ref = torch.as_tensor(reference, dtype=torch.float64)
    out = torch.as_tensor(exported, dtype=torch.float64)
    lab = torch.as_tensor(labels)
    cos = F.cosine_similarity(out, ref, dim=1)
    (r1_ref, hit_ref), (r1_out, hit_out) = recall_at_1(reference, labels, hits=True), recall_at_1(exported, labels, hits=True)
    r1_asym, hit_asym = recall_at_1(exported, labels, gallery=reference, hits=True)
    r1_ref, r1_out, r1_asym = 100 * r1_ref, 100 * r1_out, 100 * r1_asym
    sims_ref, top_ref = _top1(ref)
    _, top_out = _top1(out)
    rows = torch.arange(len(lab))
    # how much worse PyTorch finds the exported file's neighbour than its own (0 when the same)
    regret = sims_ref[rows, top_ref] - sims_ref[rows, top_out]
    served = {}
    if server is not None:
        (r1_server_ref, hit_server_ref), (r1_server, hit_server) = (server.recall_at_1(reference, labels, hits=True),
                                                                    server.recall_at_1(exported, labels, hits=True))
        served = {"teacher_gallery_recall@1_pytorch": r1_server_ref, "teacher_gallery_recall@1": r1_server,
                  "teacher_gallery_recall@1_drop": r1_server_ref - r1_server,
                  "teacher_gallery_recall@1_drop_se": paired_se(hit_server_ref, hit_server)}
    return {
        **served,
        "images": int(ref.shape[0]),
        "cosine_min": float(cos.min()),
        "cosine_mean": float(cos.mean()),
        "max_abs_diff": float((out - ref).abs().max()),
        "recall@1_pytorch": r1_ref,
        "recall@1_export": r1_out,
        "recall@1_drop": r1_ref - r1_out,
        "recall@1_drop_se": paired_se(hit_ref, hit_out),
        "asymmetric_recall@1": r1_asym,
        "asymmetric_recall@1_drop": r1_ref - r1_asym,
        "asymmetric_recall@1_drop_se": paired_se(hit_ref, hit_asym),
        "top1_agreement": float((top_ref == top_out).double().mean()),
        "top1_class_agreement": float((lab[top_ref] == lab[top_out]).double().mean()),
        "top1_agreement_eps": float((regret <= eps).double().mean()),
        "agreement_eps": eps,
        "mean_pairwise_cosine": mean_pairwise_cosine(exported),
    }


def gate(reference: np.ndarray, exported: np.ndarray, labels: np.ndarray, precision: str,
         thresholds: Thresholds = Thresholds(), server: Optional[ServerGallery] = None) -> ParityResult:
    """Compare and apply the thresholds for ``precision``. A shape or dtype mismatch always fails.
    With ``server`` (a compatible student), the drop of Recall@1 against the teacher's gallery is
    gated like the other drops."""
    if exported.shape != reference.shape or exported.dtype != np.float32:
        return ParityResult(False, {}, [f"output {exported.dtype}{list(exported.shape)} does not match "
                                        f"PyTorch's float32{list(reference.shape)}"])
    bad = ~np.isfinite(exported).all(axis=1)
    if bad.any():
        return ParityResult(False, {}, [f"output contains NaN or infinity in {int(bad.sum())} of {len(bad)} rows "
                                        f"(first: row {int(np.argmax(bad))})"])
    fig = compare(reference, exported, labels, thresholds.agreement_eps, server)
    failures = []
    collapsed = check_not_degenerate(exported, thresholds, "the exported model")
    if collapsed:
        failures.append(collapsed)
    if precision == "float32":
        if fig["cosine_min"] < thresholds.float32_cos_min:
            failures.append(f"cosine min {fig['cosine_min']:.6f} < {thresholds.float32_cos_min}")
        return ParityResult(not failures, fig, failures)
    if precision == "float16" and fig["cosine_min"] < thresholds.float16_cos_min:
        failures.append(f"cosine min {fig['cosine_min']:.6f} < {thresholds.float16_cos_min}")
    int8 = precision in INT8_PRECISIONS
    max_drop = thresholds.int8_recall_drop if int8 else thresholds.float16_recall_drop
    min_agreement = thresholds.int8_top1_agreement if int8 else thresholds.float16_top1_agreement
    for key, what in (("recall@1_drop", "Recall@1 drop"), ("asymmetric_recall@1_drop", "asymmetric Recall@1 drop "
                                                                                      "(queries against a PyTorch gallery)"),
                      ("teacher_gallery_recall@1_drop", "Recall@1 drop against the teacher's gallery (the server's "
                                                        "index this compatible student searches)")):
        if fig.get(key, 0.0) > max_drop:
            se = fig.get(f"{key}_se")  # how far the sample of images moves the drop: a borderline file says so
            noise = (f" (± {se:.2f}, the paired standard error over these {fig['images']} images; "
                     f"--parity-samples measures on more)" if se is not None and fig[key] - se <= max_drop else "")
            failures.append(f"{what} {fig[key]:.2f} points > {max_drop}{noise}")
    if fig["top1_agreement_eps"] < min_agreement:
        failures.append(f"top-1 neighbour agreement {fig['top1_agreement_eps']:.3f} < {min_agreement} "
                        f"(flips within {thresholds.agreement_eps} cosine count as agreeing)")
    return ParityResult(not failures, fig, failures)
