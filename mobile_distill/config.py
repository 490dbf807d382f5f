"""Training configuration: one frozen dataclass, YAML files, CLI overrides, ``args.yaml``.

Like nanoGPT's configurator: every knob has a commented default here; a YAML file and then
command-line flags override fields; unknown keys are an error, never silently ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import yaml

from .errors import ConfigError
from .losses import BRIDGE_LOSSES


@dataclass(frozen=True)
class TrainConfig:
    # run
    name: str = field(default="teacher", metadata={"help": "run name; the run directory is OUT_DIR/NAME"})
    out_dir: str = field(default="runs", metadata={"help": "where run directories go"})
    seed: int = field(default=0, metadata={"help": "seed for everything (same seed, same numbers on CPU)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N (a GPU by index)"})
    workers: int = field(default=0, metadata={"help": "DataLoader worker processes"})
    autocast: str = field(default="none", metadata={"help": "student forward under torch.autocast: none or bfloat16 (the GPU path; losses stay float32)"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the student's training forward"})
    gather: bool = field(default=True, metadata={"help": "on several processes (torchrun): in-batch losses (metric, relative, RKD, DarkRank, relaxed) see every rank's rows, as one process would; off: each rank's own"})
    sync_bn: bool = field(default=False, metadata={"help": "on several CUDA processes: BatchNorm statistics over the global batch (SyncBatchNorm)"})
    # data
    data: str = field(default="emoji", metadata={"help": "emoji, cub[:PATH], cars[:PATH], sop[:PATH] or folder:PATH"})
    skip_bad_images: bool = field(default=False, metadata={"help": "drop unreadable images instead of failing"})
    image_size: int = field(default=112, metadata={"help": "training and evaluation input size (pixels)"})
    crop_scale: float = field(default=0.5, metadata={"help": "lower bound of RandomResizedCrop's area scale"})
    hflip: bool = field(default=False, metadata={"help": "random horizontal flips (off: emoji arrows differ)"})
    color_jitter: float = field(default=0.0, metadata={"help": "brightness/contrast/saturation jitter"})
    eval_resize: float = field(default=1.0, metadata={"help": "eval: resize short side to size*this, centre-crop"})
    val_classes: float = field(default=0.0, metadata={"help": "fraction of training classes held out for model selection (0: keep the last epoch); --val-queries sizes the split in images instead"})
    val_queries: int = field(default=0, metadata={"help": "hold out whole training classes with at least this many images for model selection (at most 30 % of the classes; overrides --val-classes; 0: off)"})
    val_folds: int = field(default=1, metadata={"help": "K > 1: choose the epoch (or the untuned weights) by the mean over K disjoint validation splits, K short runs, then train on every training class and keep that epoch"})
    val_fold: int = field(default=0, metadata={"cli": False, "help": "which of the disjoint validation splits this run holds out (set by --val-folds)"})
    select_on: str = field(default="map@r", metadata={"help": "model selection criterion on the validation classes: map@r (recall@1 breaks ties) or recall@1"})
    keep_epoch: int = field(default=0, metadata={"cli": False, "help": "keep this epoch's weights as the selected model (set by --val-folds; -1: the untuned weights; 0: off)"})
    # model
    model: str = field(default="efficientnet_lite0", metadata={"help": "architecture: a name mdistill models lists, timm:NAME (any timm model) or py:package.module:function"})
    pretrained: str = field(default="imagenet", metadata={"help": "imagenet or none"})
    embedding_dim: int = field(default=512, metadata={"help": "embedding size D"})
    init_from: str = field(default="", metadata={"help": "start from this checkpoint's weights (same model and embedding size; the input size may differ); 'teacher': from the teacher's"})
    qat: bool = field(default=False, metadata={"help": "quantisation-aware training: fake int8 as the static int8 export does (start from a trained run: --qat --resume CKPT)"})
    qat_float: Tuple[str, ...] = field(default=(), metadata={"help": "with --qat: a module (by name, e.g. backbone.stages.0) kept in float, in training and in the int8 file; repeatable"})
    # loss
    loss: str = field(default="multi_similarity", metadata={"help": "task loss: multi_similarity, triplet or none (pure distillation)"})
    margin: float = field(default=0.2, metadata={"help": "triplet margin (the seed code used 0)"})
    mining: str = field(default="all", metadata={"help": "triplet mining: hard (batch-hard) or all (batch-all)"})
    soft_margin: bool = field(default=False, metadata={"help": "triplet: log(1+exp(d_ap-d_an)) instead of a hinge"})
    ms_alpha: float = field(default=2.0, metadata={"help": "multi-similarity alpha"})
    ms_beta: float = field(default=50.0, metadata={"help": "multi-similarity beta"})
    ms_base: float = field(default=0.5, metadata={"help": "multi-similarity base (lambda)"})
    # distillation (a student run: --teacher PATH --distill NAME:WEIGHT ...)
    teacher: str = field(default="", metadata={"help": "teacher: a checkpoint, timm:NAME, tv:NAME, py:module:function or FILE.onnx; makes this a distillation run"})
    distill: Tuple[str, ...] = field(default=(), metadata={"help": "NAME:WEIGHT[:key=value,...], repeatable (absolute, relative, rkd, relaxed, darkrank, hint, attention)"})
    compatible: bool = field(default=False, metadata={"help": "the student serves a teacher-embedded index (phone queries, server gallery): export also gates Recall@1 of each file's queries against the teacher's gallery; needs a loss that ties the two spaces (absolute, contrastive or prototype)"})
    teacher_view: str = field(default="augmented", metadata={"help": "teacher input: augmented (the student's crop) or clean (un-augmented image)"})
    teacher_cache: bool = field(default=False, metadata={"help": "compute the teacher's embeddings once and reuse them every epoch: of cache_views replayed augmented views per image (teacher_view augmented) or of the clean view"})
    cache_views: int = field(default=8, metadata={"help": "augmented views per image in the teacher cache (replayed crops: the student trains on exactly these views)"})
    teacher_dtype: str = field(default="float32", metadata={"help": "teacher forward precision: float32 or bfloat16 (autocast; ~1.6x faster on CPUs with AMX)"})
    mixup: float = field(default=0.0, metadata={"help": "mixup alpha for the unlabeled rows (mixed with random rows of the batch; distillation losses only; live teacher); 0: off"})
    teacher_cache_dir: str = field(default="", metadata={"help": "where the teacher cache lives (default: the run directory); share it across runs"})
    teacher_image_size: int = field(default=0, metadata={"help": "teacher input size (cross-quality: larger than --image-size); 0: the teacher's own"})
    teacher_weights: str = field(default="", metadata={"help": "local weights of a timm:/tv:/py: teacher (a state dict or .safetensors; for offline use)"})
    teacher_mean: str = field(default="", metadata={"help": "R,G,B mean the teacher's input is normalised with (default: the teacher's own contract)"})
    teacher_std: str = field(default="", metadata={"help": "R,G,B std of the teacher's input normalisation (default: the teacher's own contract)"})
    teacher_embeddings: str = field(default="", metadata={"help": "precomputed teacher embeddings (.npy, one row per image of --teacher-images) in place of --teacher: for teachers behind a service; clean-view teaching only"})
    teacher_images: str = field(default="", metadata={"help": "with --teacher-embeddings: a text file naming the image of each row, one path per line (absolute, or relative to the file's folder)"})
    teacher_embedding: str = field(default="pre_logits", metadata={"help": "a timm teacher's output taken as its embedding: pre_logits (pooled features) or logits"})
    unlabeled: str = field(default="", metadata={"help": "extra images for the distillation losses only: 'pool' (the data set's; an error if it has none), 'auto' (the data set's pool if it has one, else none) or folder PATH"})
    unlabeled_per_batch: int = field(default=0, metadata={"help": "unlabeled images added to each batch (0: as many as labelled)"})
    label_fraction: float = field(default=1.0, metadata={"help": "keep labels for this fraction of training classes; the rest become unlabeled"})
    # optimisation
    optimizer: str = field(default="adamw", metadata={"help": "adam, adamw or sgd"})
    lr: float = field(default=1e-3, metadata={"help": "learning rate of the head"})
    backbone_lr: float = field(default=1e-4, metadata={"help": "learning rate of the backbone"})
    weight_decay: float = field(default=1e-4, metadata={"help": "weight decay"})
    scheduler: str = field(default="cosine", metadata={"help": "cosine or constant (after warm-up)"})
    warmup_epochs: float = field(default=0.0, metadata={"help": "linear warm-up length in epochs"})
    epochs: int = field(default=20, metadata={"help": "training epochs"})
    classes_per_batch: int = field(default=32, metadata={"help": "P of a PK batch"})
    images_per_class: int = field(default=2, metadata={"help": "K of a PK batch"})
    epoch_pass: str = field(default="images", metadata={"help": "what one epoch passes over: images (every labelled image once, images // (P*K) batches) or classes (each class once: the first release's definition)"})
    batches_per_epoch: int = field(default=0, metadata={"help": "fix the batches per epoch (0: as epoch_pass says)"})
    eval_every: int = field(default=5, metadata={"help": "log test-class recall every N epochs (never used for selection); 0: only at the end"})
    eval_batch_size: int = field(default=128, metadata={"help": "batch size for embedding during evaluation"})

    @property
    def batch_size(self) -> int:
        return self.classes_per_batch * self.images_per_class

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["distill"] = list(self.distill)  # YAML- and weights_only-friendly
        return d


# Bounds that no real run reaches: a value past them is a typo (1.0e+9 epochs) that would start a run
# that never ends, or allocate more memory than any machine has.
_MAX = {"epochs": 100_000, "image_size": 4096, "batches_per_epoch": 10_000_000}

_CHOICES = {
    "loss": ("multi_similarity", "triplet", "none"),
    "teacher_view": ("augmented", "clean"),
    "mining": ("hard", "all"),
    "optimizer": ("adam", "adamw", "sgd"),
    "scheduler": ("cosine", "constant"),
    "pretrained": ("imagenet", "none"),
    "epoch_pass": ("images", "classes"),
    "teacher_dtype": ("float32", "bfloat16"),
    "teacher_embedding": ("pre_logits", "logits"),
    "autocast": ("none", "bfloat16"),
    "select_on": ("map@r", "recall@1"),
}
# args.yaml carries the run's resolved figures (optimiser steps, ...) under this key: written by
# training for the reader, ignored when the file is read back as a config.
RESOLVED_KEY = "resolved"


def field_names() -> Tuple[str, ...]:
    return tuple(f.name for f in fields(TrainConfig))


def builtin_config(name: str) -> Optional[Path]:
    """Path of a config shipped in ``mobile_distill/configs`` (``teacher_emoji`` -> its YAML)."""
    p = resources.files("mobile_distill") / "configs" / f"{name}.yaml"
    return Path(str(p)) if p.is_file() else None


def load_yaml(path: str | Path) -> Dict[str, Any]:
    """Read a YAML config file, or a built-in config by name (``teacher_emoji``)."""
    p = Path(path)
    if not p.exists():
        builtin = builtin_config(str(path))
        if builtin is None:
            raise ConfigError(f"config file not found: {path}")
        p = builtin
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must be a mapping of key: value")
    return data


def make_config(base: Optional[Mapping[str, Any]] = None, **overrides: Any) -> TrainConfig:
    """Defaults <- ``base`` (e.g. a YAML file's mapping) <- ``overrides`` (None values are ignored).

    Raises:
        ConfigError: unknown keys (listed with the valid ones), wrong types, bad choices.
    """
    merged = {k: v for k, v in (base or {}).items() if k != RESOLVED_KEY}
    merged.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(merged) - set(field_names()))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(unknown)}; valid keys: {', '.join(field_names())}")
    types = {f.name: f.type for f in fields(TrainConfig)}
    clean = {k: _coerce(k, v, types[k]) for k, v in merged.items()}
    cfg = TrainConfig(**clean)
    _validate(cfg)
    return cfg


def _coerce(key: str, value: Any, type_name: str) -> Any:
    if type_name.startswith("Tuple"):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
            raise ConfigError(f"{key} must be a list of strings, got {value!r}")
        return tuple(items)
    kind = {"int": int, "float": float, "str": str, "bool": bool}[type_name]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    try:
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be {type_name}, got {value!r}") from None


def _validate(cfg: TrainConfig) -> None:
    for key, choices in _CHOICES.items():
        if getattr(cfg, key) not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {getattr(cfg, key)!r}")
    for key in ("epochs", "image_size", "classes_per_batch", "images_per_class", "eval_batch_size"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key} must be at least 1, got {getattr(cfg, key)}")
    for key, most in _MAX.items():
        if getattr(cfg, key) > most:
            raise ConfigError(f"{key} must be at most {most:,}, got {getattr(cfg, key):,} (a typo in an exponent?)")
    if not 0.0 <= cfg.val_classes < 1.0:
        raise ConfigError(f"val_classes must be in [0, 1), got {cfg.val_classes}")
    if cfg.val_queries < 0 or cfg.val_folds < 1 or cfg.val_fold < 0:
        raise ConfigError(f"need --val-queries >= 0, --val-folds >= 1 and val_fold >= 0, got "
                          f"{cfg.val_queries}, {cfg.val_folds}, {cfg.val_fold}")
    if cfg.val_folds > 1 and not (cfg.val_queries or cfg.val_classes):
        raise ConfigError("--val-folds K needs a validation split to repeat: --val-queries N (or --val-classes F)")
    if cfg.keep_epoch > cfg.epochs or cfg.keep_epoch < -1:
        raise ConfigError(f"keep_epoch must be -1 (untuned), 0 (off) or an epoch up to {cfg.epochs}, got {cfg.keep_epoch}")
    if not 0.0 < cfg.label_fraction <= 1.0:
        raise ConfigError(f"label_fraction must be in (0, 1], got {cfg.label_fraction}")
    if cfg.distill and not (cfg.teacher or cfg.teacher_embeddings):
        raise ConfigError("--distill needs --teacher PATH (the teacher checkpoint)")
    if (cfg.teacher or cfg.teacher_embeddings) and not cfg.distill:
        raise ConfigError("--teacher given without any --distill NAME:WEIGHT loss")
    if cfg.teacher_embeddings:
        if cfg.teacher:
            raise ConfigError("give --teacher or --teacher-embeddings, not both")
        if not cfg.teacher_images:
            raise ConfigError("--teacher-embeddings needs --teacher-images LIST: the image of each row")
        if cfg.teacher_view != "clean" or cfg.mixup:
            raise ConfigError("precomputed embeddings teach on the clean images only: pass --teacher-view clean "
                              "(and no --mixup); the student still trains on augmented crops")
    if cfg.init_from == "teacher" and not (cfg.teacher and Path(cfg.teacher).is_file()):
        raise ConfigError("init_from: teacher starts the student from the teacher checkpoint's weights: pass "
                          "--teacher PATH to an mdistill checkpoint (not a timm:/tv:/py: model)")
    if cfg.compatible and not any(str(d).split(":")[0] in BRIDGE_LOSSES for d in cfg.distill):
        raise ConfigError("--compatible needs a loss that ties the student's space to the teacher's: add "
                          "--distill contrastive:1 (or absolute / prototype)")
    if cfg.loss == "none" and not cfg.distill:
        raise ConfigError("loss none (pure distillation) needs at least one --distill loss")
    if cfg.unlabeled and not cfg.distill:
        raise ConfigError("unlabeled images only feed distillation losses; add --teacher and --distill")
    if cfg.cache_views < 1:
        raise ConfigError(f"cache_views must be at least 1, got {cfg.cache_views}")
    if cfg.mixup < 0:
        raise ConfigError(f"mixup must be >= 0 (a Beta(alpha, alpha) parameter; 0 turns it off), got {cfg.mixup}")
    if cfg.mixup and cfg.teacher_cache:
        raise ConfigError("--mixup needs the live teacher: a cache cannot hold the teacher's output on a mixed image; "
                          "drop --teacher-cache")
    if cfg.mixup and not cfg.unlabeled:
        raise ConfigError("--mixup mixes the unlabeled rows of each batch: also pass --unlabeled pool|PATH")
    if cfg.qat_float and not cfg.qat:
        raise ConfigError("--qat-float names modules the QAT graph keeps in float: it needs --qat")
    if cfg.qat and (cfg.autocast != "none" or cfg.compile):
        raise ConfigError("--qat trains the fake-int8 graph in float32: drop --autocast / --compile")
    if not 0.0 < cfg.crop_scale <= 1.0:
        raise ConfigError(f"crop_scale must be in (0, 1], got {cfg.crop_scale}")


def dump_yaml(cfg: TrainConfig, resolved: Optional[Mapping[str, Any]] = None) -> str:
    """The config as YAML; ``resolved`` (e.g. the optimiser steps) goes under ``resolved:``."""
    d = cfg.to_dict()
    if resolved:
        d[RESOLVED_KEY] = dict(resolved)
    return yaml.safe_dump(d, sort_keys=False)
