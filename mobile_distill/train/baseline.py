"""Evaluation inside a training run, and what fine-tuning a pretrained backbone has to beat: its own
pooled features, untuned."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import torch

from .. import distributed as dd
from ..checkpoint import save_checkpoint
from ..config import TrainConfig
from ..evaluate import evaluate_samples
from ..models import create_model


def say(text: str) -> None:
    """Print once (rank 0) beside any progress bar."""
    from tqdm import tqdm

    if dd.is_main():
        tqdm.write(text)


def evaluate_split(model, samples, cfg: TrainConfig, device, ks=(1, 2, 4, 8), dataset: str = "", domains=None,
                   progress: bool = False, per_query: bool = False) -> Dict:
    """Recall@K of ``samples`` at the run's eval settings (sharded over the ranks of a distributed run)."""
    return evaluate_samples(model, samples, cfg.image_size, device, ks, dataset, domains, cfg.eval_resize,
                            cfg.eval_batch_size, cfg.workers, progress, per_query)


def untuned_baseline(cfg: TrainConfig, data, val_samples, device, run_dir: Path) -> Optional[Dict]:
    """What fine-tuning has to beat: the pretrained backbone's own pooled features, untuned.

    Only for metric-learning runs (no teacher) from pretrained weights. With validation classes
    the untuned model is saved as the first ``best.pt``, so a run whose fine-tuning never beats
    it on validation keeps it (an ``embedding_dim``-free model: the pooled features).
    """
    if cfg.teacher or cfg.teacher_embeddings or cfg.pretrained == "none" or cfg.init_from:
        return None
    model = create_model(cfg.model, None, cfg.pretrained, cfg.image_size).to(device, memory_format=torch.channels_last)
    out = {"test": evaluate_split(model, data.test, cfg, device, ks=data.recall_ks, dataset=data.name,
                                  domains=data.domains)}
    if val_samples:
        from .selection import score

        val = evaluate_split(model, val_samples, cfg, device, dataset=data.name, per_query=True)
        out["val_recall@1"] = val["recall@1"]
        out["val"] = {**score(val, cfg.select_on), "epoch": 0, "untuned": True}
    # the first kept model: selection replaces it with an epoch unless it stays measurably better
    # (or --val-folds chose it: keep_epoch -1)
    if (val_samples or cfg.keep_epoch == -1) and dd.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(run_dir / "best.pt", {"model": model.model_info(), "state_dict": model.state_dict(),
                                              "config": cfg.to_dict(), "epoch": 0, "untuned_features": True})
    say(f"untuned {cfg.pretrained} features of {cfg.model}: test recall@1 {out['test']['recall@1']:.4f}"
        + (f", validation recall@1 {out['val_recall@1']:.4f}, {cfg.select_on} {out['val']['value']:.4f}"
           if val_samples else ""))
    return out


def say_untuned(untuned: Dict, test: Dict, selected: str) -> None:
    a, b = test["recall@1"], untuned["test"]["recall@1"]
    if a > b:
        say(f"fine-tuning beat the untuned features: test recall@1 {a:.4f} vs {b:.4f}")
    elif selected.startswith("untuned"):
        say(f"the untuned features were measurably better on the validation classes: kept them "
            f"(test recall@1 {a:.4f})")
    elif selected.startswith(("best", "epoch")):  # the held-out classes preferred an epoch the test classes do not
        say(f"note: the validation classes preferred a fine-tuned epoch, but on the test classes it does not beat "
            f"the untuned features: test recall@1 {a:.4f} vs {b:.4f} (selection never looks at the test classes)")
    else:
        say(f"WARNING: fine-tuning did NOT beat the untuned features: test recall@1 {a:.4f} vs {b:.4f}; "
            f"set --val-queries to keep the better of the two automatically, or change the recipe")
