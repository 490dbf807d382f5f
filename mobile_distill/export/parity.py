"""The parity gate every format shares: an exported file must embed and retrieve like PyTorch.

Figures (on the same real test images): per-image cosine between the exported and the PyTorch
embedding (min / mean), max absolute difference, Recall@1 of both, and top-1 neighbour agreement
(how often the exported model's nearest gallery image is PyTorch's, or of the same class as
PyTorch's: several near-identical images of one class make the image-level choice among them a
coin toss that retrieval never sees; the strict image-level figure is reported beside it).
Which figures gate depends on the precision:
float32 / float16 by the minimum cosine, the int8 family by Recall@1 drop and agreement.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import MdistillError

INT8_PRECISIONS = ("int8", "dynamic_int8", "weight_int8")


class ExportError(MdistillError):
    """An export that cannot start or finish (bad options, degenerate model, missing converter)."""


@dataclass(frozen=True)
class Thresholds:
    """Gate thresholds; every one is settable from the CLI."""

    float32_cos_min: float = 0.9999
    float16_cos_min: float = 0.999
    int8_recall_drop: float = 1.0  # Recall@1 points (percent)
    int8_top1_agreement: float = 0.90
    # Mean pairwise cosine of embeddings of different images above this = a collapsed model.
    degenerate_cos: float = 0.999

    def as_dict(self) -> Dict[str, float]:
        return asdict(self)


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


def _recall_at_1_and_top1(emb: torch.Tensor, labels: torch.Tensor):
    # Recall@1 from the same function as `mdistill eval` (so the figures agree to the last query);
    # the nearest neighbours from the same float32 cosine similarities.
    from ..evaluate import retrieval_metrics

    r1 = retrieval_metrics(emb.float(), labels, ks=(1,), map_at_r=False)["recall@1"]
    e = F.normalize(emb.float(), dim=1)
    sims = e @ e.T
    sims.fill_diagonal_(-float("inf"))
    return float(r1), sims.argmax(1)


def recall_at_1(emb: np.ndarray, labels: np.ndarray) -> float:
    return _recall_at_1_and_top1(torch.as_tensor(emb), torch.as_tensor(labels))[0]


def compare(reference: np.ndarray, exported: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
    """Parity figures of ``exported`` against ``reference`` embeddings of the same images."""
    ref = torch.as_tensor(reference, dtype=torch.float64)
    out = torch.as_tensor(exported, dtype=torch.float64)
    lab = torch.as_tensor(labels)
    cos = F.cosine_similarity(out, ref, dim=1)
    r1_ref, top_ref = _recall_at_1_and_top1(ref, lab)
    r1_out, top_out = _recall_at_1_and_top1(out, lab)
    return {
        "images": int(ref.shape[0]),
        "cosine_min": float(cos.min()),
        "cosine_mean": float(cos.mean()),
        "max_abs_diff": float((out - ref).abs().max()),
        "recall@1_pytorch": 100 * r1_ref,
        "recall@1_export": 100 * r1_out,
        "recall@1_drop": 100 * (r1_ref - r1_out),
        "top1_agreement": float((top_ref == top_out).double().mean()),
        "top1_class_agreement": float((lab[top_ref] == lab[top_out]).double().mean()),
        "mean_pairwise_cosine": mean_pairwise_cosine(exported),
    }


def gate(reference: np.ndarray, exported: np.ndarray, labels: np.ndarray, precision: str,
         thresholds: Thresholds = Thresholds()) -> ParityResult:
    """Compare and apply the thresholds for ``precision``. A shape or dtype mismatch always fails."""
    if exported.shape != reference.shape or exported.dtype != np.float32:
        return ParityResult(False, {}, [f"output {exported.dtype}{list(exported.shape)} does not match "
                                        f"PyTorch's float32{list(reference.shape)}"])
    if not np.isfinite(exported).all():
        return ParityResult(False, {}, ["output contains NaN or infinity"])
    fig = compare(reference, exported, labels)
    failures = []
    collapsed = check_not_degenerate(exported, thresholds, "the exported model")
    if collapsed:
        failures.append(collapsed)
    if precision in INT8_PRECISIONS:
        if fig["recall@1_drop"] > thresholds.int8_recall_drop:
            failures.append(f"Recall@1 drop {fig['recall@1_drop']:.2f} points > {thresholds.int8_recall_drop}")
        if fig["top1_class_agreement"] < thresholds.int8_top1_agreement:
            failures.append(f"top-1 neighbour agreement {fig['top1_class_agreement']:.3f} "
                            f"< {thresholds.int8_top1_agreement}")
    else:
        need = thresholds.float16_cos_min if precision == "float16" else thresholds.float32_cos_min
        if fig["cosine_min"] < need:
            failures.append(f"cosine min {fig['cosine_min']:.6f} < {need}")
    return ParityResult(not failures, fig, failures)
