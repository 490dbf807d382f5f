"""One training loop for teachers (metric learning) and students (distillation from a teacher).

Reads top to bottom: ``main`` sets up data, model, loss, optimiser and schedule (the phases of
``setup.py``), then runs ``train_one_epoch`` / ``evaluate_split`` per epoch and writes the run directory:
``args.yaml``, ``metrics.csv``, ``last.pt`` (``best.pt`` with a validation split), ``results.json``.

Reproducibility: every epoch re-seeds all RNGs from ``(seed, epoch)`` and the PK sampler derives
its order from the same pair, so resuming from the checkpoint written after epoch e replays
epoch e+1 exactly; a run killed at any point and resumed ends bit-identical on CPU.

Under torchrun every process runs this same loop (``ddp.py``): the student is wrapped in
DDP, each rank takes its share of the recipe's global batch, and only rank 0 writes the run
directory and prints.
"""

from __future__ import annotations

import csv
import io
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch
from tqdm import tqdm

from .. import distributed as dd
from ..checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from ..config import TrainConfig
from ..losses.metric import mean_pairwise_distance
from ..models.complexity import complexity
from ..qat import float_net
from ..utils.io import write_json_atomic, write_text_atomic
from ..utils.progress import bars_off
from ..utils.provenance import provenance
from ..utils.seed import epoch_seed, seed_everything
from .baseline import evaluate_split, say, say_untuned
from .selection import decision, describe, prefer, score, without_queries
from .setup import (Run, begin, build_models, build_objective, build_optimiser, load_data, memory_format_for,
                    open_run_dir)
from .teacher import Teacher, asymmetric_metrics, student_view


def mix_unlabeled(images: torch.Tensor, labels: torch.Tensor, alpha: float) -> torch.Tensor:
    """Mixup on the transfer set: each unlabeled row becomes ``lam * x_a + (1 - lam) * x_b`` of two
    random rows of the batch, ``lam ~ Beta(alpha, alpha)`` per row. Labelled rows stay clean for the
    task loss; the teacher sees the mixed images too (consistent teaching)."""
    rows = torch.nonzero(labels < 0).squeeze(1)  # (U,)
    if alpha <= 0 or len(rows) == 0:
        return images
    lam = torch.distributions.Beta(alpha, alpha).sample((len(rows),)).to(images.dtype)  # (U,)
    a, b = torch.randint(len(images), (2, len(rows)))
    lam = lam.view(-1, 1, 1, 1).to(images.device)
    mixed = images.clone()
    mixed[rows] = lam * images[a] + (1 - lam) * images[b]
    return mixed


def train_one_epoch(forward, loader, objective, optimizer, scheduler, device, epoch: int, progress: bool,
                    teacher: Optional[Teacher] = None, image_size: int = 0, mixup: float = 0.0,
                    autocast: str = "none", memory_format: torch.memory_format = torch.channels_last) -> Dict:
    """One pass of ``loader``. ``forward`` is the student's training forward (``ddp.wrap_student``:
    embedding and feature maps; DDP-wrapped on several processes). ``images_per_s`` counts the
    images of every process (the global batch)."""
    forward.train()
    totals: Dict[str, float] = {}
    n_batches, n_images, mpd, start = 0, 0, 0.0, time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}", unit="batch", disable=bars_off(progress), leave=False)
    for images, labels, index, *views in bar:  # views: replayed-view ids (teacher cache of augmented views)
        images, labels = images.to(device, memory_format=torch.channels_last), labels.to(device)
        images = mix_unlabeled(images, labels, mixup)
        t_emb, t_feats = (teacher(images, index, objective.teacher_stages, *views) if teacher else (None, None))
        # Cross-quality: the teacher saw the full-resolution crop, the student sees it downsampled.
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast == "bfloat16"):
            s_emb, s_feats = forward(student_view(images, image_size).contiguous(memory_format=memory_format))
        s_emb, s_feats = s_emb.float(), {k: m.float() for k, m in s_feats.items()}  # losses in float32
        terms = objective(s_emb, labels, t_emb, s_feats, t_feats, labeled_mask=labels >= 0)  # (B, D) in
        loss = terms["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        dd.average_gradients(objective.parameters())  # DDP owns only the student's
        optimizer.step()
        scheduler.step()
        for k, v in terms.items():
            totals[k] = totals.get(k, 0.0) + float(v.detach())
        mpd += mean_pairwise_distance(s_emb)
        n_batches, n_images = n_batches + 1, n_images + len(images)
        bar.set_postfix(loss=f"{float(loss.detach()):.4f}", img_s=f"{n_images / (time.perf_counter() - start):.0f}")
    stats = {k: v / max(n_batches, 1) for k, v in totals.items()}
    stats["mean_pairwise_distance"] = mpd / max(n_batches, 1)
    stats["images_per_s"] = n_images * dd.world_size() / max(time.perf_counter() - start, 1e-9)
    return stats


def write_metrics_csv(path: Path, history: List[Dict]) -> None:
    keys: List[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    write_text_atomic(path, buf.getvalue())


def main(cfg: Optional[TrainConfig] = None, resume: Optional[str | Path] = None, progress: bool = True) -> Dict:
    """Train (or resume) a run; returns the ``results.json`` content.

    Args:
        cfg: the configuration (ignored when resuming: the checkpoint's own is used).
        resume: path of a ``last.pt`` to continue from.
    """
    if cfg is not None and resume is None and cfg.val_folds > 1:
        from .folds import main_with_folds

        return main_with_folds(cfg, main, progress)
    created: list = []
    try:
        return _main(cfg, resume, progress, created)
    except BaseException:
        # A new run that fails before its first checkpoint (a bad image, Ctrl-C) leaves no folder.
        for run_dir in created:
            if not any((run_dir / name).exists() for name in ("last.pt", "best.pt")):
                shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _main(cfg, resume, progress, created: list) -> Dict:
    """The loop, phase by phase; each phase fills in its part of ``run``."""
    run = begin(cfg, resume, progress)  # config (the checkpoint's when resuming), seeds, device
    load_data(run)                      # labelled PK batches, plus unlabeled images
    build_models(run)                   # the student (or the teacher being trained), the frozen teacher
    build_objective(run)                # task + distillation losses, the (DDP) student forward
    open_run_dir(run, created)          # args.yaml, the teacher's cache
    build_optimiser(run)                # optimiser, schedule, untuned baseline, the resumed state
    for epoch in range(run.start_epoch, run.cfg.epochs):
        _train_epoch(run, epoch)        # one pass, validation, checkpoints, one line of figures
    return _finish(run)                 # the selected model on the test classes: results.json


def _train_epoch(run: Run, epoch: int) -> None:
    cfg, model, data = run.cfg, run.model, run.data
    seed_everything(epoch_seed(cfg.seed, epoch) + dd.rank())  # ranks augment differently
    run.batches.set_epoch(epoch)
    if cfg.qat:
        model.set_epoch(epoch, cfg.epochs)
    t0 = time.perf_counter()
    stats = train_one_epoch(run.forward, run.loader, run.objective, run.optimizer, run.scheduler, run.device, epoch,
                            run.progress, run.teacher, cfg.image_size, cfg.mixup, cfg.autocast,
                            memory_format_for(model))
    run.train_time += time.perf_counter() - t0
    row = {"epoch": epoch + 1, **{k: round(v, 6) for k, v in stats.items()}, "lr": run.scheduler.get_last_lr()[-1]}
    if run.val_samples:
        val = evaluate_split(model, run.val_samples, cfg, run.device, dataset=data.name, per_query=True)
        row.update({"val_recall@1": val["recall@1"], "val_map@r": val["map@r"]})
    if epoch + 1 == cfg.epochs or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0):
        row["test_recall@1"] = evaluate_split(model, data.test, cfg, run.device, dataset=data.name)["recall@1"]
    run.history.append(row)
    if run.val_samples:
        candidate = {**score(val, cfg.select_on, (run.untuned or {}).get("val")), "epoch": epoch + 1}
        run.val_scores.append(without_queries(candidate))
        if prefer(candidate, run.best_fine_tuned):
            run.best_fine_tuned = without_queries(candidate)
        if prefer(candidate, run.best):  # the kept model: the untuned weights or the best epoch so far
            run.best = without_queries(candidate)
            if run.main_rank:
                save_checkpoint(run.run_dir / "best.pt", run.payload(epoch + 1))
    if cfg.keep_epoch == epoch + 1 and run.main_rank:  # the epoch --val-folds chose
        save_checkpoint(run.run_dir / "best.pt", run.payload(epoch + 1))
    if run.main_rank:
        save_checkpoint(run.run_dir / "last.pt", run.payload(epoch + 1))
        write_metrics_csv(run.run_dir / "metrics.csv", run.history)
    # One line per epoch even without progress bars: the learning curve is the point.
    shown = {k: row[k] for k in row if k in ("loss", "mean_pairwise_distance", "images_per_s") or "recall" in k}
    say(f"epoch {epoch + 1}/{cfg.epochs} " + " ".join(f"{k}={v:.4g}" for k, v in shown.items()))


def _finish(run: Run) -> Dict:
    """Final numbers come from the selected model: best on validation classes, else the last epoch."""
    cfg, data, model, teacher, untuned = run.cfg, run.data, run.model, run.teacher, run.untuned
    selected = "last"
    dd.barrier()  # best.pt is complete before any rank reads it
    if (run.val_samples or cfg.keep_epoch) and (run.run_dir / "best.pt").exists():
        best_ckpt = load_checkpoint(run.run_dir / "best.pt")
        model = model_from_checkpoint(best_ckpt).to(run.device)
        selected = ("untuned pretrained features (measurably better than every fine-tuned epoch on the validation "
                    "classes)" if best_ckpt.get("untuned_features") else "best (validation classes)" if run.val_samples
                    else f"epoch {cfg.keep_epoch} (chosen by --val-folds)")
    test = evaluate_split(model, data.test, cfg, run.device, ks=data.recall_ks, dataset=data.name,
                          domains=data.domains, progress=run.progress)
    if teacher is not None and teacher.can_embed and run.main_rank:  # phone queries against the teacher's gallery
        test.update(asymmetric_metrics(model, teacher, run.objective, data, cfg.image_size, cfg.eval_resize, run.device))
    selection = ({**decision(run.best, (untuned or {}).get("val"), run.best_fine_tuned), "epochs": run.val_scores}
                 if run.val_samples else None)
    if selection:
        say(describe(selection))
    if untuned:
        say_untuned(untuned, test, selected)
    results = {"run_dir": str(run.run_dir), "selected": selected, **({"selection": selection} if selection else {}),
               "test": test, "model": model.model_info(),
               "complexity": complexity(float_net(model).cpu(), cfg.image_size), "train_time_s": round(run.train_time, 1),
               "epochs": cfg.epochs, **run.steps, "data": {"name": data.name, **data.summary()},
               "device": str(run.device), "losses": {"task": cfg.loss, "distill": list(cfg.distill)},
               "unlabeled_images": run.n_unlabeled, **({"untuned": untuned["test"]} if untuned else {}),
               **({"teacher": teacher.record()} if teacher else {}), "provenance": provenance()}
    if run.main_rank:
        write_json_atomic(run.run_dir / "results.json", results)
    return results
