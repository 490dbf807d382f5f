"""Model selection on held-out training classes: which epoch a run keeps, or its untuned weights.

Three rules, because a choice made on a handful of classes is mostly noise:
- the split is sized in queries (``val_queries`` images of whole classes), not only as a fraction of
  classes, and a split under ``MIN_VAL_QUERIES`` is named as too small to decide;
- epochs are compared on MAP@R (every relevant neighbour's rank counts, so it moves where Recall@1
  of a few hundred queries ties), Recall@1 breaking ties;
- fine-tuning on the target data is the prior: the untuned weights are kept only when they are
  measurably better, by more than the standard error of the criterion's difference on those
  queries. Both are scored on the same queries, so the error is that of the paired per-query
  differences (much smaller than either score's own, which the queries' spread in difficulty
  dominates); without per-query figures (the means over ``--val-folds``) it is the larger of the
  two scores' own errors.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..evaluate import paired_standard_error

CRITERIA = ("map@r", "recall@1")
# Below this many validation queries the standard error of MAP@R is about 2 points or more on our
# small sets (per-query AP@R spreads with a standard deviation near 0.3): a choice between epochs a
# point apart is then a coin toss.
MIN_VAL_QUERIES = 300
MAX_VAL_FRACTION = 0.3  # a query-sized split never takes more of the training classes than this

Sample = Tuple[str, int]


def validation_classes(train: Sequence[Sample], seed: int, fraction: float = 0.0, queries: int = 0,
                       fold: int = 0) -> List[int]:
    """The classes held out for selection: whole classes in a seeded order, ``fraction`` of them, or
    as many as hold ``queries`` images (at most ``MAX_VAL_FRACTION`` of the classes). ``fold`` k
    takes the k-th such block of the same order, so folds are disjoint."""
    classes = sorted({y for _, y in train})
    g = torch.Generator().manual_seed(seed)
    order = [classes[i] for i in torch.randperm(len(classes), generator=g).tolist()]
    if queries > 0:
        sizes: Dict[int, int] = {}
        for _, y in train:
            sizes[y] = sizes.get(y, 0) + 1
        cap = max(2, int(len(classes) * MAX_VAL_FRACTION))
        n, images = 0, 0
        for c in order:  # the first block's class count; every fold takes as many
            if images >= queries or n >= cap:
                break
            n, images = n + 1, images + sizes[c]
        n = max(n, 2)
    elif fraction > 0:
        n = max(2, round(len(classes) * fraction))
    else:
        return []
    block = order[fold * n:(fold + 1) * n]
    if len(block) < 2:
        from ..errors import ConfigError

        raise ConfigError(f"not enough training classes for validation fold {fold + 1} "
                          f"({len(classes)} classes, {n} per fold): use fewer --val-folds")
    return block


def split_validation(train: Sequence[Sample], seed: int, fraction: float = 0.0, queries: int = 0,
                     fold: int = 0) -> Tuple[List[Sample], List[Sample]]:
    """(training samples, validation samples): whole training classes carved out, never test classes."""
    held = set(validation_classes(train, seed, fraction, queries, fold))
    return [s for s in train if s[1] not in held], [s for s in train if s[1] in held]


def score(metrics: Dict, criterion: str = "map@r", untuned: Optional[Dict] = None) -> Dict:
    """What selection compares, from ``retrieval_metrics``' output: the criterion, Recall@1, the
    criterion's standard error over the queries and (given the ``untuned`` weights' score) the
    standard error of the difference from it."""
    n = max(int(metrics.get("num_queries", 0)), 1)
    r1 = float(metrics["recall@1"])
    se = {"map@r": float(metrics.get("map@r_se", 0.0)), "recall@1": math.sqrt(max(r1 * (1 - r1), 0.0) / n)}
    out = {"criterion": criterion, "value": float(metrics[criterion]), "recall@1": r1, "se": se[criterion],
           "queries": int(metrics.get("num_queries", 0))}
    if criterion in metrics.get("per_query", {}):
        out["per_query"] = metrics["per_query"][criterion]
    if untuned is not None:
        out["margin_se"], out["margin_se_paired"] = margin_se(out, untuned)
    return out


def without_queries(s: Dict) -> Dict:
    """A score as recorded per epoch and in ``results.json``: without the per-query figures."""
    return {k: v for k, v in s.items() if k != "per_query"}


def margin_se(a: Dict, b: Dict) -> Tuple[float, bool]:
    """The standard error of ``a``'s criterion minus ``b``'s, and whether it is the paired one (both
    scored on the same queries), else the larger of the two scores' own errors."""
    qa, qb = a.get("per_query"), b.get("per_query")
    if qa is not None and qb is not None and len(qa) == len(qb) > 1:
        return paired_standard_error(qa, qb), True
    return max(a["se"], b["se"]), False


def prefer(candidate: Dict, best: Optional[Dict]) -> bool:
    """Whether a fine-tuned epoch scored ``candidate`` replaces the kept model scored ``best``.

    Against another epoch: a higher (criterion, Recall@1). Against the untuned weights: unless they
    are better by more than the standard error of the difference (``margin_se``: a tie, or a gap
    within the noise of these queries, goes to fine-tuning)."""
    if best is None:
        return True
    if best.get("untuned"):
        se = candidate["margin_se"] if "margin_se" in candidate else margin_se(candidate, best)[0]
        return candidate["value"] >= best["value"] - se
    return (candidate["value"], candidate["recall@1"]) > (best["value"], best["recall@1"])


def decision(kept: Optional[Dict], untuned: Optional[Dict], best_fine_tuned: Optional[Dict]) -> Dict:
    """The record of what selection kept and why, for the console and ``results.json``."""
    out = {"kept": "untuned" if kept and kept.get("untuned") else f"epoch {kept['epoch']}" if kept else "last",
           "criterion": next((s["criterion"] for s in (kept, best_fine_tuned, untuned) if s and s.get("criterion")),
                             None)}
    for name, s in (("kept_score", kept), ("untuned_score", untuned), ("best_fine_tuned_score", best_fine_tuned)):
        if s:
            out[name] = {k: s[k] for k in ("criterion", "value", "recall@1", "se", "queries", "epoch") if k in s}
    if untuned and best_fine_tuned:
        out["margin"] = best_fine_tuned["value"] - untuned["value"]  # fine-tuned minus untuned
        out["margin_se"], out["margin_se_paired"] = (
            (best_fine_tuned["margin_se"], best_fine_tuned["margin_se_paired"]) if "margin_se" in best_fine_tuned
            else margin_se(best_fine_tuned, untuned))
    return out


def describe(record: Dict) -> str:
    """One line: what was kept, its figure and the untuned weights', and the margin between them."""
    kept, crit = record.get("kept_score"), record.get("criterion") or "map@r"
    if kept is None:
        return "model selection: no validation split, kept the last epoch"
    text = (f"model selection on {kept['queries']} validation queries by {crit.upper()}: kept {record['kept']} "
            f"({crit} {kept['value']:.4f} ± {kept['se']:.4f}, recall@1 {kept['recall@1']:.4f})")
    untuned, best = record.get("untuned_score"), record.get("best_fine_tuned_score")
    if untuned and best:
        se = "paired standard error" if record.get("margin_se_paired") else "standard error"
        why = (f"the untuned weights are better by more than the {se}" if record["kept"] == "untuned"
               else f"fine-tuning is kept unless the untuned weights are better by more than the {se}")
        text += (f"; untuned {crit} {untuned['value']:.4f}, best fine-tuned epoch {best['epoch']} "
                 f"{best['value']:.4f}, margin {record['margin']:+.4f}"
                 + (f" ± {record['margin_se']:.4f}" if "margin_se" in record else "") + f" ({why})")
    if kept["queries"] < MIN_VAL_QUERIES:
        text += (f". WARNING: {kept['queries']} validation queries are fewer than {MIN_VAL_QUERIES}, too few to tell "
                 f"epochs a point apart: raise --val-queries, or average over class splits with --val-folds K")
    return text
