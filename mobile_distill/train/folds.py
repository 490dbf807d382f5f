"""``--val-folds K``: model selection averaged over K disjoint validation splits, for data too small
for one split to decide.

K short runs, run k holding out the k-th block of whole training classes (``val_fold`` k, each block
``--val-queries`` images), score every epoch and the untuned weights on their own block. The scores
are averaged per epoch over the folds (the standard error of a mean of K independent splits), the
same rule as one split picks an epoch or the untuned weights (``selection.prefer``), and a last run
on every training class keeps that epoch (``keep_epoch``). The fold runs live in
``OUT/NAME-folds/fold<k>``; a command run again reuses finished folds and resumes a killed one.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, List, Optional

from ..config import TrainConfig
from ..utils.io import write_json_atomic
from .baseline import say
from .selection import decision, describe, prefer


def main_with_folds(cfg: TrainConfig, main: Callable[..., Dict], progress: bool = True) -> Dict:
    """Train ``cfg`` with ``--val-folds``; ``main`` is ``train.main`` (one run, or a resumed one)."""
    folds_dir = Path(cfg.out_dir) / f"{cfg.name}-folds"
    folds = [_fold(main, cfg, k, folds_dir, progress) for k in range(cfg.val_folds)]
    chosen = choose(folds)
    kept = chosen["kept"]
    say(describe(chosen).replace("model selection on", f"model selection over {cfg.val_folds} folds, on"))
    final = replace(cfg, val_folds=1, val_fold=0, val_queries=0, val_classes=0.0,
                    keep_epoch=-1 if kept == "untuned" else int(kept.split()[1]))
    results = main(final, progress=progress)
    results["selection"] = {**chosen, "folds": [{"run_dir": f["run_dir"], **f["selection"]} for f in folds]}
    write_json_atomic(Path(results["run_dir"]) / "results.json", results)
    return results


def _fold(main, cfg: TrainConfig, k: int, folds_dir: Path, progress: bool) -> Dict:
    run_dir = folds_dir / f"fold{k + 1}"
    if (run_dir / "results.json").is_file():
        say(f"fold {k + 1}/{cfg.val_folds}: reusing {run_dir}")
        return json.loads((run_dir / "results.json").read_text())
    if (run_dir / "last.pt").is_file():
        return main(resume=run_dir / "last.pt", progress=progress)
    say(f"fold {k + 1}/{cfg.val_folds}: holding out validation block {k + 1}")
    return main(replace(cfg, val_folds=1, val_fold=k, out_dir=str(folds_dir), name=f"fold{k + 1}"), progress=progress)


def choose(folds: List[Dict]) -> Dict:
    """The decision of ``selection.prefer`` on scores averaged over the folds, epoch by epoch."""
    per_fold = [f["selection"]["epochs"] for f in folds]
    untuned = _mean([f["selection"].get("untuned_score") for f in folds])
    if untuned is not None:
        untuned.update(untuned=True, epoch=0)
    best, best_fine_tuned = untuned, None
    for epoch in range(1, min(len(e) for e in per_fold) + 1):
        candidate = {**_mean([e[epoch - 1] for e in per_fold]), "epoch": epoch}
        if prefer(candidate, best_fine_tuned):
            best_fine_tuned = candidate
        if prefer(candidate, best):
            best = candidate
    return decision(best, untuned, best_fine_tuned)


def _mean(scores: List[Optional[Dict]]) -> Optional[Dict]:
    if not scores or any(s is None for s in scores):
        return None
    k = len(scores)
    return {"criterion": next((s.get("criterion") for s in scores if s.get("criterion")), None), "value": sum(s["value"] for s in scores) / k,
            "recall@1": sum(s["recall@1"] for s in scores) / k,
            "se": math.sqrt(sum(s["se"] ** 2 for s in scores)) / k, "queries": sum(s["queries"] for s in scores),
            # the folds' paired errors of the margin from the untuned weights, combined the same way
            **({"margin_se": math.sqrt(sum(s["margin_se"] ** 2 for s in scores)) / k,
                "margin_se_paired": all(s.get("margin_se_paired") for s in scores)}
               if all("margin_se" in s for s in scores) else {})}
