"""The set-up phases of a training run (``loop._main`` calls them in order), each filling in its part
of a ``Run``: config and device, data and PK batches, the models (student and frozen teacher), the
objective and the (DDP) student forward, the run directory and the teacher's cache, the optimiser
and schedule, and the state a resumed run continues from."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader

from .. import distributed as dd
from ..checkpoint import load_checkpoint, model_from_checkpoint, rng_state, set_rng_state
from ..config import TrainConfig, dump_yaml, make_config
from ..data import ImageDataset, create_dataset
from ..data.base import Sample
from ..data.folder import list_images
from ..data.sampler import PKBatchSampler
from ..data.transforms import train_transform
from ..data.views import ReplayedViews, ViewBatches
from ..errors import CheckpointError, ConfigError
from ..losses.combine import WeightedSum, build_distill_losses
from ..losses.metric import metric_loss_from_config
from ..models import create_model
from ..qat import QatStudent, float_net
from ..teacher_sources import options_from_config
from ..utils.io import write_text_atomic
from ..utils.seed import seed_everything
from .baseline import say, untuned_baseline
from .ddp import RankBatches, wrap_student
from .selection import split_validation
from .teacher import Teacher


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


def memory_format_for(model: torch.nn.Module) -> torch.memory_format:
    """channels_last (1.45x faster depthwise convolutions on CPU, measured on Lite0 at 112 px), except
    for a network with a strided 1x1 convolution on the RGB image (the stems of timm's MobileOne and
    FastViT): in channels_last, oneDNN's AVX2 kernel for that layer's weight gradient corrupts the
    heap (torch 2.14), so training aborts on a CPU without AVX-512 (or with ONEDNN_MAX_CPU_ISA=AVX2)."""
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d) and m.in_channels <= 4 and m.kernel_size == (1, 1) and max(m.stride) > 1:
            return torch.contiguous_format
    return torch.channels_last


def training_samples(data, cfg: TrainConfig) -> Tuple[List[Sample], List[Sample]]:
    """Labelled training samples (label -1 for unlabeled ones) and the validation samples.

    ``label_fraction`` < 1 (the semi-supervised experiment) keeps the labels of a seeded random
    fraction of the training classes; the other classes' images join the unlabeled images.
    """
    train, val = split_validation(data.train, cfg.seed, cfg.val_classes, cfg.val_queries, cfg.val_fold)
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


class Run:
    """The state one training run builds up, phase by phase."""

    def __init__(self, cfg: TrainConfig, ckpt: Optional[Dict], run_dir: Path, resume, device, progress: bool):
        self.cfg, self.ckpt, self.run_dir, self.resume, self.device = cfg, ckpt, run_dir, resume, device
        self.main_rank = dd.is_main()
        self.progress = progress and self.main_rank
        self.teacher: Optional[Teacher] = None
        self.start_epoch, self.history, self.train_time = 0, [], 0.0
        self.best: Optional[Dict] = None  # the kept model's validation score (selection.py)
        self.best_fine_tuned: Optional[Dict] = None
        self.val_scores: List[Dict] = []  # every epoch's validation score, for --val-folds

    def payload(self, epoch: int) -> Dict:
        """What ``last.pt`` / ``best.pt`` hold after ``epoch`` epochs: enough to resume bit for bit."""
        cfg, model = self.cfg, self.model
        return {"model": model.model_info(), "state_dict": float_net(model).state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(), "epoch": epoch,
                "step": epoch * len(self.sampler), "config": cfg.to_dict(), "history": self.history,
                "rng": rng_state(), "selection": {"best": self.best, "best_fine_tuned": self.best_fine_tuned,
                                                     "epochs": self.val_scores},
                "train_time_s": self.train_time,
                "data": {"name": self.data.name, **self.data.summary()}, "objective": self.objective.state_dict(),
                "losses": {"task": cfg.loss, "distill": list(cfg.distill)}, "untuned": self.untuned,
                **({"teacher": self.teacher.record()} if self.teacher else {}),
                **({"qat": model.quantizer_state()} if cfg.qat else {})}


def begin(cfg, resume, progress) -> Run:
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
    if dd.world_size() > 1 and cfg.qat:
        raise ConfigError("--qat runs on one process; drop torchrun / --nproc")
    return Run(cfg, ckpt, run_dir, resume, device, progress)


def load_data(run: Run) -> None:
    cfg = run.cfg
    if not run.main_rank:
        dd.barrier()  # rank 0 fetches or indexes the data alone first
    run.data = create_dataset(cfg.data, skip_bad_images=cfg.skip_bad_images, progress=run.progress)
    if run.main_rank:
        dd.barrier()
    run.samples, run.val_samples = training_samples(run.data, cfg)
    labels = [y for _, y in run.samples]
    run.n_unlabeled = labels.count(-1)
    run.pk_classes = classes_per_batch(cfg, len({y for y in labels if y >= 0}))
    run.sampler = PKBatchSampler(labels, run.pk_classes, cfg.images_per_class, seed=cfg.seed,
                                 batches_per_epoch=cfg.batches_per_epoch, epoch_pass=cfg.epoch_pass,
                                 unlabeled_per_batch=(cfg.unlabeled_per_batch or cfg.batch_size) if run.n_unlabeled else 0)


def build_models(run: Run) -> None:
    cfg, ckpt = run.cfg, run.ckpt
    run.model = model_from_checkpoint(ckpt, str(run.resume)) if ckpt is not None else initial_model(cfg)
    run.model.to(run.device, memory_format=memory_format_for(run.model))
    if cfg.teacher or cfg.teacher_embeddings:
        run.teacher = Teacher(cfg.teacher or f"embeddings:{cfg.teacher_embeddings}", run.samples, run.device,
                              cfg.teacher_image_size or None, cfg.teacher_view, cfg.eval_resize, run.data.name,
                              cfg.teacher_dtype, options_from_config(cfg))
        if ckpt is not None and ckpt.get("teacher", {}).get("sha256") not in (None, run.teacher.sha256):
            raise CheckpointError(f"teacher {cfg.teacher} changed since this run started (checksum differs)")
    # Cross-quality: crop at the teacher's input size (--teacher-image-size, else its own) when it is
    # the larger, so the teacher sees full resolution and the student a downsampled copy.
    crop_size = max(cfg.image_size, run.teacher.image_size if run.teacher else 0)
    transform = train_transform(crop_size, (cfg.crop_scale, 1.0), cfg.hflip, cfg.color_jitter)
    if cfg.teacher and cfg.teacher_cache and cfg.teacher_view == "augmented":
        # consistent and fast: the student trains on the very views whose teacher outputs are cached
        run.dataset = ReplayedViews(run.samples, transform, cfg.cache_views, VIEW_CACHE_SEED, run.data.name)
        run.batches = ViewBatches(run.sampler, cfg.cache_views, cfg.seed)
    else:
        run.dataset, run.batches = ImageDataset(run.samples, transform, run.data.name), run.sampler
    if dd.world_size() > 1:  # each rank: its P/W classes of the recipe's global batch
        run.batches = RankBatches(run.batches, run.pk_classes * cfg.images_per_class, run.sampler.u,
                                  cfg.images_per_class)
    run.loader = DataLoader(run.dataset, batch_sampler=run.batches, num_workers=cfg.workers)


def build_objective(run: Run) -> None:
    cfg = run.cfg
    # Train-time modules (projections, regressors) are initialised from the seed alone, whatever ran before.
    torch.manual_seed(cfg.seed)
    task = metric_loss_from_config(cfg) if cfg.loss != "none" else None
    distill = build_distill_losses(cfg.distill, run.model, run.teacher) if run.teacher else []
    run.objective = WeightedSum(task, distill).to(run.device)
    if cfg.teacher_cache and cfg.teacher_view == "clean" and run.objective.teacher_stages:
        raise ConfigError("hint/attention need the teacher's feature maps, which the clean-view cache does not hold: "
                          "use --teacher-view augmented (its cache keeps the maps) or drop --teacher-cache")
    if cfg.qat:  # from here on the student computes in fake int8; its float weights are what is saved
        run.model = QatStudent(run.model, run.objective.student_stages, cfg.image_size, cfg.qat_float)
        if run.ckpt is not None:
            run.model.load_quantizer_state(run.ckpt["qat"])
    run.objective.gather = dd.world_size() > 1 and cfg.gather
    run.forward = wrap_student(run.model, run.objective.student_stages, run.device, cfg.sync_bn, cfg.compile)


def open_run_dir(run: Run, created: list) -> None:
    """The run directory appears only once the set-up succeeded, so a mistyped flag leaves no debris."""
    cfg, sampler = run.cfg, run.sampler
    run.run_dir = dd.broadcast_object(run.run_dir)  # rank 0's choice (name-2, ...) before anyone writes
    if run.main_rank and not run.run_dir.exists():
        created.append(run.run_dir)
    if run.main_rank:
        run.run_dir.mkdir(parents=True, exist_ok=True)
    run.steps = {"classes_per_batch": run.pk_classes, "steps_per_epoch": len(sampler),
                 "optimizer_steps": len(sampler) * cfg.epochs, "labelled_images": len(run.samples) - run.n_unlabeled,
                 "unlabeled_images": run.n_unlabeled, "batch_size": cfg.batch_size + sampler.u,
                 "processes": dd.world_size()}
    if run.main_rank:
        write_text_atomic(run.run_dir / "args.yaml", dump_yaml(cfg, run.steps))
    cache_dir = Path(cfg.teacher_cache_dir or run.run_dir)
    if run.teacher is not None and isinstance(run.dataset, ReplayedViews):
        run.teacher.build_view_cache(run.dataset, cache_dir, run.progress, run.objective.teacher_stages)
    elif run.teacher is not None and cfg.teacher_cache:
        run.teacher.build_cache(cache_dir, run.progress)


def build_optimiser(run: Run) -> None:
    cfg, ckpt = run.cfg, run.ckpt
    run.optimizer = build_optimizer(run.model, cfg, list(run.objective.parameters()))
    run.scheduler = build_scheduler(run.optimizer, cfg, len(run.sampler))
    run.untuned = (ckpt.get("untuned") if ckpt is not None
                   else untuned_baseline(cfg, run.data, run.val_samples, run.device, run.run_dir))
    if run.untuned and "val" in run.untuned:
        run.best = run.untuned["val"]  # kept unless a fine-tuned epoch comes within the noise (selection.prefer)
    if ckpt is not None:
        run.objective.load_state_dict(ckpt["objective"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
        run.scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"])
        run.start_epoch, run.history = ckpt["epoch"], ckpt["history"]
        kept = ckpt.get("selection", {})
        run.best, run.best_fine_tuned, run.val_scores = kept.get("best"), kept.get("best_fine_tuned"), kept.get("epochs", [])
        run.train_time = ckpt.get("train_time_s", 0.0)
