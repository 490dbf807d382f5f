"""One training loop for teachers (metric learning) and students (distillation from a teacher).

Reads top to bottom: ``main`` sets up data, model, loss, optimiser and schedule, then runs
``train_one_epoch`` / ``evaluate_split`` per epoch and writes the run directory:
``args.yaml``, ``metrics.csv``, ``last.pt`` (``best.pt`` with a validation split), ``results.json``.

Reproducibility: every epoch re-seeds all RNGs from ``(seed, epoch)`` and the PK sampler derives
its order from the same pair, so resuming from the checkpoint written after epoch e replays
epoch e+1 exactly; a run killed at any point and resumed ends bit-identical on CPU.

Under torchrun every process runs this same loop (``distributed.py``): the student is wrapped in
DDP, each rank takes its share of the recipe's global batch, and only rank 0 writes the run
directory and prints.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .checkpoint import load_checkpoint, model_from_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig, dump_yaml, make_config
from .data import ImageDataset, create_dataset
from .data.base import Sample
from .data.folder import list_images
from .data.sampler import PKBatchSampler
from .data.views import ReplayedViews, ViewBatches
from .data.transforms import train_transform
from . import distributed as dd
from .baseline import evaluate_split, say, say_untuned, untuned_baseline
from .errors import CheckpointError, ConfigError
from .losses.combine import WeightedSum, build_distill_losses
from .losses.metric import mean_pairwise_distance, metric_loss_from_config
from .models import create_model
from .models.complexity import complexity
from .qat import QatStudent, float_net
from .teacher import Teacher, asymmetric_metrics, student_view
from .teacher_sources import options_from_config
from .utils.io import write_json_atomic, write_text_atomic
from .utils.progress import bars_off
from .utils.seed import epoch_seed, seed_everything


# The replayed views are part of the cache's identity, shared by every seed of a comparison (the
# seed still decides which view each epoch draws).
VIEW_CACHE_SEED = 0


def initial_model(cfg: TrainConfig):
    """A new model as the config describes it, with ``init_from``'s weights when given."""
    if not cfg.init_from:
        return create_model(cfg.model, cfg.embedding_dim, cfg.pretrained, cfg.image_size)
    source = cfg.teacher if cfg.init_from == "teacher" else cfg.init_from
    model = model_from_checkpoint(load_checkpoint(source), source)
    info = model.model_info()
    if (info["arch"], info["embedding_dim"]) != (cfg.model, cfg.embedding_dim):
        raise ConfigError(f"init_from {source} holds {info['arch']} (embedding {info['embedding_dim']}), "
                          f"the config asks for {cfg.model} (embedding {cfg.embedding_dim}): start from a checkpoint "
                          "of the same model and embedding size")
    # The networks are fully convolutional: a teacher's weights can start its own student at a smaller
    # input (the compatible recipe), which then records the size it is trained and exported at.
    model.image_size = cfg.image_size
    return model


def split_validation(train: List[Sample], fraction: float, seed: int):
    """Carve whole classes out of the training split for model selection (never the test classes)."""
    if fraction <= 0:
        return train, []
    classes = sorted({y for _, y in train})
    g = torch.Generator().manual_seed(seed)
    n_val = max(2, round(len(classes) * fraction))
    val = {classes[i] for i in torch.randperm(len(classes), generator=g)[:n_val].tolist()}
    return [s for s in train if s[1] not in val], [s for s in train if s[1] in val]


def build_optimizer(model, cfg: TrainConfig, extra: Sequence[torch.nn.Parameter] = ()) -> torch.optim.Optimizer:
    """Backbone at ``backbone_lr``; head and train-time-only modules (projections, regressors) at ``lr``."""
    head = list(model.head.parameters()) + list(extra)
    head_ids = {id(p) for p in head}
    body = [p for p in model.parameters() if id(p) not in head_ids]
    groups = [{"params": body, "lr": cfg.backbone_lr}]
    if head:
        groups.append({"params": head, "lr": cfg.lr})
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=0.9, weight_decay=cfg.weight_decay)
    opt = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return opt(groups, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer, cfg: TrainConfig, steps_per_epoch: int):
    total, warmup = cfg.epochs * steps_per_epoch, int(cfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.scheduler == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


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


def memory_format_for(model: torch.nn.Module) -> torch.memory_format:
    """channels_last (1.45x faster depthwise convolutions on CPU, measured on Lite0 at 112 px), except
    for a network with a strided 1x1 convolution on the RGB image (the stems of timm's MobileOne and
    FastViT): in channels_last, oneDNN's AVX2 kernel for that layer's weight gradient corrupts the
    heap (torch 2.14), so training aborts on a CPU without AVX-512 (or with ONEDNN_MAX_CPU_ISA=AVX2)."""
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d) and m.in_channels <= 4 and m.kernel_size == (1, 1) and max(m.stride) > 1:
            return torch.contiguous_format
    return torch.channels_last


def train_one_epoch(forward, loader, objective, optimizer, scheduler, device, epoch: int, progress: bool,
                    teacher: Optional[Teacher] = None, image_size: int = 0, mixup: float = 0.0,
                    autocast: str = "none", memory_format: torch.memory_format = torch.channels_last) -> Dict:
    """One pass of ``loader``. ``forward`` is the student's training forward (``dd.wrap_student``:
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


def training_samples(data, cfg: TrainConfig) -> Tuple[List[Sample], List[Sample]]:
    """Labelled training samples (label -1 for unlabeled ones) and the validation samples.

    ``label_fraction`` < 1 (the semi-supervised experiment) keeps the labels of a seeded random
    fraction of the training classes; the other classes' images join the unlabeled images.
    """
    train, val = split_validation(data.train, cfg.val_classes, cfg.seed)
    unlabeled: List[str] = []
    if cfg.label_fraction < 1.0:
        classes = sorted({y for _, y in train})
        g = torch.Generator().manual_seed(cfg.seed + 1)
        keep = {classes[i] for i in torch.randperm(len(classes), generator=g)[: max(2, round(len(classes) * cfg.label_fraction))].tolist()}
        unlabeled += [p for p, y in train if y not in keep]
        train = [(p, y) for p, y in train if y in keep]
    if cfg.unlabeled in ("pool", "auto"):
        if data.unlabeled:
            unlabeled += data.unlabeled
        elif cfg.unlabeled == "pool":
            raise ConfigError(f"data set {data.name!r} has no built-in unlabeled pool; pass --unlabeled PATH")
        else:  # a recipe written for emoji still runs on a folder of the user's own images
            say(f"note: data set {data.name!r} has no built-in unlabeled pool: the distillation losses see the "
                "labelled images only (--unlabeled PATH adds a folder of extra images)")
    elif cfg.unlabeled:
        unlabeled += list_images(cfg.unlabeled)
    return train + [(p, -1) for p in unlabeled], val


def classes_per_batch(cfg: TrainConfig, n_classes: int) -> int:
    """P of the PK batch: the recipe's, or every training class when there are fewer (a recipe
    tuned on emoji's 700+ classes must still run on a data set with 40); said, and recorded in
    ``args.yaml``'s ``resolved`` block."""
    if cfg.classes_per_batch <= n_classes or n_classes < 2:
        return cfg.classes_per_batch  # (fewer than 2 classes: the sampler's own error)
    say(f"note: classes_per_batch {cfg.classes_per_batch} > {n_classes} training classes; "
               f"using {n_classes} per batch")
    return n_classes


def new_run_dir(cfg: TrainConfig) -> Path:
    """``out_dir/name``, or ``name-2``, ``name-3``, ... if that already holds a run (not created here)."""
    base = Path(cfg.out_dir) / cfg.name
    run_dir, i = base, 2
    while (run_dir / "args.yaml").exists():
        run_dir, i = base.with_name(f"{base.name}-{i}"), i + 1
    return run_dir


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
    ckpt = load_checkpoint(resume) if resume else None
    if ckpt is not None:
        cfg, run_dir = make_config(ckpt["config"]), Path(resume).parent
        for torn in run_dir.glob(".*.tmp"):  # left by a write that a kill interrupted
            torn.unlink()
    else:
        cfg = cfg or TrainConfig()
        run_dir = new_run_dir(cfg)
    seed_everything(cfg.seed)
    device = dd.init_distributed(cfg.device)  # this rank's device; joins torchrun's process group
    main_rank = dd.is_main()
    progress = progress and main_rank
    if dd.world_size() > 1 and cfg.qat:
        raise ConfigError("--qat runs on one process; drop torchrun / --nproc")

    # data: labelled PK batches, plus unlabeled images for the distillation losses
    if not main_rank:
        dd.barrier()  # rank 0 fetches or indexes the data alone first
    data = create_dataset(cfg.data, skip_bad_images=cfg.skip_bad_images, progress=progress)
    if main_rank:
        dd.barrier()
    samples, val_samples = training_samples(data, cfg)
    labels = [y for _, y in samples]
    n_unlabeled = labels.count(-1)
    pk_classes = classes_per_batch(cfg, len({y for y in labels if y >= 0}))
    sampler = PKBatchSampler(labels, pk_classes, cfg.images_per_class, seed=cfg.seed,
                             batches_per_epoch=cfg.batches_per_epoch, epoch_pass=cfg.epoch_pass,
                             unlabeled_per_batch=(cfg.unlabeled_per_batch or cfg.batch_size) if n_unlabeled else 0)
    # student (or teacher being trained), frozen teacher, objective, optimiser
    model = model_from_checkpoint(ckpt, str(resume)) if ckpt is not None else initial_model(cfg)
    model.to(device, memory_format=memory_format_for(model))
    teacher = None
    if cfg.teacher or cfg.teacher_embeddings:
        teacher = Teacher(cfg.teacher or f"embeddings:{cfg.teacher_embeddings}", samples, device, cfg.teacher_image_size or None, cfg.teacher_view,
                          cfg.eval_resize, data.name, cfg.teacher_dtype, options_from_config(cfg))
        if ckpt is not None and ckpt.get("teacher", {}).get("sha256") not in (None, teacher.sha256):
            raise CheckpointError(f"teacher {cfg.teacher} changed since this run started (checksum differs)")
    # Cross-quality: crop at the teacher's input size (--teacher-image-size, else its own) when it is
    # the larger, so the teacher sees full resolution and the student a downsampled copy.
    crop_size = max(cfg.image_size, teacher.image_size if teacher else 0)
    transform = train_transform(crop_size, (cfg.crop_scale, 1.0), cfg.hflip, cfg.color_jitter)
    if cfg.teacher and cfg.teacher_cache and cfg.teacher_view == "augmented":
        # consistent and fast: the student trains on the very views whose teacher outputs are cached
        dataset = ReplayedViews(samples, transform, cfg.cache_views, VIEW_CACHE_SEED, data.name)
        batches = ViewBatches(sampler, cfg.cache_views, cfg.seed)
    else:
        dataset, batches = ImageDataset(samples, transform, data.name), sampler
    if dd.world_size() > 1:  # each rank: its P/W classes of the recipe's global batch
        batches = dd.RankBatches(batches, pk_classes * cfg.images_per_class, sampler.u, cfg.images_per_class)
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=cfg.workers)
    # Train-time modules (projections, regressors) are initialised from the seed alone, whatever ran before.
    torch.manual_seed(cfg.seed)
    task = metric_loss_from_config(cfg) if cfg.loss != "none" else None
    objective = WeightedSum(task, build_distill_losses(cfg.distill, model, teacher) if teacher else []).to(device)
    if cfg.teacher_cache and cfg.teacher_view == "clean" and objective.teacher_stages:
        raise ConfigError("hint/attention need the teacher's feature maps, which the clean-view cache does not hold: "
                          "use --teacher-view augmented (its cache keeps the maps) or drop --teacher-cache")
    if cfg.qat:  # from here on the student computes in fake int8; its float weights are what is saved
        model = QatStudent(model, objective.student_stages, cfg.image_size, cfg.qat_float)
        if ckpt is not None:
            model.load_quantizer_state(ckpt["qat"])
    objective.gather = dd.world_size() > 1 and cfg.gather
    forward = dd.wrap_student(model, objective.student_stages, device, cfg.sync_bn, cfg.compile)
    # The run directory appears only once the set-up succeeded, so a mistyped flag leaves no debris.
    run_dir = dd.broadcast_object(run_dir)  # rank 0's choice (name-2, ...) before anyone writes
    if main_rank and not run_dir.exists():
        created.append(run_dir)
    if main_rank:
        run_dir.mkdir(parents=True, exist_ok=True)
    steps = {"classes_per_batch": pk_classes, "steps_per_epoch": len(sampler), "optimizer_steps": len(sampler) * cfg.epochs,
             "labelled_images": len(samples) - n_unlabeled, "unlabeled_images": n_unlabeled,
             "batch_size": cfg.batch_size + sampler.u, "processes": dd.world_size()}
    if main_rank:
        write_text_atomic(run_dir / "args.yaml", dump_yaml(cfg, steps))
    if teacher is not None and isinstance(dataset, ReplayedViews):
        teacher.build_view_cache(dataset, Path(cfg.teacher_cache_dir or run_dir), progress, objective.teacher_stages)
    elif teacher is not None and cfg.teacher_cache:
        teacher.build_cache(Path(cfg.teacher_cache_dir or run_dir), progress)
    optimizer = build_optimizer(model, cfg, list(objective.parameters()))
    scheduler = build_scheduler(optimizer, cfg, len(sampler))
    start_epoch, history, best, train_time = 0, [], -1.0, 0.0
    untuned = ckpt.get("untuned") if ckpt is not None else untuned_baseline(cfg, data, val_samples, device, run_dir)
    if untuned and "val_recall@1" in untuned:
        best = untuned["val_recall@1"]  # fine-tuned epochs must beat the untuned features to be selected
    if ckpt is not None:
        objective.load_state_dict(ckpt["objective"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"])
        start_epoch, history = ckpt["epoch"], ckpt["history"]
        best, train_time = ckpt.get("best_val_recall", -1.0), ckpt.get("train_time_s", 0.0)

    def payload(epoch: int) -> Dict:
        return {"model": model.model_info(), "state_dict": float_net(model).state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "epoch": epoch, "step": epoch * len(sampler),
                "config": cfg.to_dict(), "history": history, "rng": rng_state(), "best_val_recall": best,
                "train_time_s": train_time, "data": {"name": data.name, **data.summary()},
                "objective": objective.state_dict(), "losses": {"task": cfg.loss, "distill": list(cfg.distill)},
                "untuned": untuned, **({"teacher": teacher.record()} if teacher else {}),
                **({"qat": model.quantizer_state()} if cfg.qat else {})}

    for epoch in range(start_epoch, cfg.epochs):
        seed_everything(epoch_seed(cfg.seed, epoch) + dd.rank())  # ranks augment differently
        batches.set_epoch(epoch)
        if cfg.qat:
            model.set_epoch(epoch, cfg.epochs)
        t0 = time.perf_counter()
        stats = train_one_epoch(forward, loader, objective, optimizer, scheduler, device, epoch, progress,
                                teacher, cfg.image_size, cfg.mixup, cfg.autocast, memory_format_for(model))
        train_time += time.perf_counter() - t0
        row = {"epoch": epoch + 1, **{k: round(v, 6) for k, v in stats.items()}, "lr": scheduler.get_last_lr()[-1]}
        if val_samples:
            row["val_recall@1"] = evaluate_split(model, val_samples, cfg, device, dataset=data.name)["recall@1"]
        last = epoch + 1 == cfg.epochs
        if last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0):
            row["test_recall@1"] = evaluate_split(model, data.test, cfg, device, dataset=data.name)["recall@1"]
        history.append(row)
        if val_samples and row["val_recall@1"] > best:
            best = row["val_recall@1"]
            if main_rank:
                save_checkpoint(run_dir / "best.pt", payload(epoch + 1))
        if main_rank:
            save_checkpoint(run_dir / "last.pt", payload(epoch + 1))
            write_metrics_csv(run_dir / "metrics.csv", history)
        # One line per epoch even without progress bars: the learning curve is the point.
        shown = {k: row[k] for k in row if k in ("loss", "mean_pairwise_distance", "images_per_s") or "recall" in k}
        say(f"epoch {epoch + 1}/{cfg.epochs} " + " ".join(f"{k}={v:.4g}" for k, v in shown.items()))

    # Final numbers come from the selected model: best on validation classes, else the last epoch.
    selected = "last"
    dd.barrier()  # best.pt is complete before any rank reads it
    if val_samples and (run_dir / "best.pt").exists():
        best_ckpt = load_checkpoint(run_dir / "best.pt")
        model = model_from_checkpoint(best_ckpt).to(device)
        selected = ("untuned pretrained features (no fine-tuned epoch beat them on the validation classes)"
                    if best_ckpt.get("untuned_features") else "best (validation classes)")
    test = evaluate_split(model, data.test, cfg, device, ks=data.recall_ks, dataset=data.name,
                          domains=data.domains, progress=progress)
    if teacher is not None and teacher.can_embed and main_rank:  # phone queries (student) against a server gallery embedded by the teacher
        test.update(asymmetric_metrics(model, teacher, objective, data, cfg.image_size, cfg.eval_resize, device))
    if untuned:
        say_untuned(untuned, test, selected)
    results = {"run_dir": str(run_dir), "selected": selected, "test": test, "model": model.model_info(),
               "complexity": complexity(float_net(model).cpu(), cfg.image_size), "train_time_s": round(train_time, 1),
               "epochs": cfg.epochs, **steps, "data": {"name": data.name, **data.summary()}, "device": str(device),
               "losses": {"task": cfg.loss, "distill": list(cfg.distill)}, "unlabeled_images": n_unlabeled,
               **({"untuned": untuned["test"]} if untuned else {}),
               **({"teacher": teacher.record()} if teacher else {})}
    if main_rank:
        write_json_atomic(run_dir / "results.json", results)
    return results
