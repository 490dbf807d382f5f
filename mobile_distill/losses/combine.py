"""Turning ``--distill NAME:WEIGHT[:key=value,...]`` flags into one training objective.

``parse_distill_spec`` reads one flag, ``build_distill_losses`` creates the losses with sizes taken
from the two models, and ``WeightedSum`` adds them to the student's task loss:

    L = L_task(labeled rows) + sum_i w_i * L_i(all rows)

Feature-map losses (``hint``, ``attention``) name backbone stages of each network. ``WeightedSum``
exposes the union of those stages; ``models.features.collect_features`` runs a model once and returns its maps as
``{stage: map}``, and ``WeightedSum`` hands each loss the maps it asked for.
"""

from __future__ import annotations

import inspect
import math
import re
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..distributed import gather_rows
from ..errors import ConfigError, RegistryError
from . import LOSSES, _import_losses
from .base import DistillLoss

SPEC_FORM = "NAME:WEIGHT[:key=value,...]"
# Arguments derived from the models; a spec may not set them.
_FROM_MODELS = ("student_dim", "teacher_dim", "student_channels", "teacher_channels")
_RESERVED = ("loss", "task")


def distill_loss_names() -> List[str]:
    """Registered losses that are teacher -> student losses (``DistillLoss`` subclasses)."""
    _import_losses()
    return [n for n in LOSSES.names() if _is_distill(LOSSES.get(n))]


def _is_distill(factory) -> bool:
    return isinstance(factory, type) and issubclass(factory, DistillLoss)


def _parse_value(text: str):
    # "true"/"false" -> bool, then int, then float; "a/b" -> a tuple (stage lists); else the string.
    if "/" in text:
        return tuple(_parse_value(part) for part in text.split("/"))
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_distill_spec(spec: str) -> Tuple[str, float, Dict]:
    """Parse one ``--distill`` value.

    Examples: ``relative:0.1``, ``rkd:1:angle_weight=0``, ``absolute:1.0:center=true``,
    ``attention:1:student_stages=-3/-2,teacher_stages=-3/-2`` (``/`` separates tuple items).

    Args:
        spec: ``NAME:WEIGHT[:key=value,...]``.

    Returns:
        ``(name, weight, kwargs)`` with values parsed as bool, int, float, tuple or string.

    Raises:
        ConfigError: bad syntax, a non-numeric, negative or non-finite weight.
        RegistryError: an unknown name, or a loss that is not a distillation loss.
    """
    parts = str(spec).strip().split(":", 2)
    if len(parts) < 2 or not parts[0].strip() or not parts[1].strip():
        raise ConfigError(f"bad --distill {spec!r}: expected {SPEC_FORM}, e.g. relative:0.1")
    name = parts[0].strip()
    try:
        weight = float(parts[1])
    except ValueError:
        raise ConfigError(f"bad --distill {spec!r}: weight {parts[1]!r} is not a number; "
                          f"expected {SPEC_FORM}") from None
    if not math.isfinite(weight) or weight < 0:
        raise ConfigError(f"bad --distill {spec!r}: the weight must be a finite number >= 0")
    kwargs: Dict = {}
    if len(parts) == 3:
        for item in parts[2].split(","):
            key, sep, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or not re.fullmatch(r"[A-Za-z_]\w*", key) or not value:
                raise ConfigError(f"bad --distill {spec!r}: option {item!r} is not key=value; "
                                  f"expected {SPEC_FORM}")
            if key in kwargs:
                raise ConfigError(f"bad --distill {spec!r}: option {key!r} is given twice")
            kwargs[key] = _parse_value(value)
    _import_losses()
    factory = LOSSES.get(name)  # RegistryError listing the names for an unknown one
    if not _is_distill(factory):
        raise RegistryError(f"loss {name!r} is not a distillation loss; available: "
                            f"{', '.join(distill_loss_names())}")
    return name, weight, kwargs


def _resolve_stage(model, index: int, who: str, spec: str) -> int:
    if getattr(model, "feature_info", None) is None:  # an ONNX file, a factory without maps, embeddings
        kind = getattr(getattr(model, "source", None), "kind", "this")
        raise ConfigError(f"--distill {spec!r} needs the {who}'s feature maps, and a {kind} teacher is opaque "
                          "(embeddings only): use absolute, relative, rkd, relaxed or darkrank, or a checkpoint, "
                          "timm: or tv: teacher")
    n = len(model.feature_info)
    if not -n <= int(index) < n:
        raise ConfigError(f"--distill {spec!r}: {who} stage {index} does not exist; "
                          f"the {who} has stages 0..{n - 1} (or -{n}..-1)")
    return int(index) % n


def build_distill_losses(specs: Sequence[str], student, teacher) -> List[Tuple[float, DistillLoss]]:
    """Create the losses named by ``--distill`` specs, sized for the two models.

    Embedding sizes come from ``model.embedding_dim``; channel counts from
    ``model.feature_info[stage]["num_chs"]``. Stage indices (``student_stage[s]`` /
    ``teacher_stage[s]``, from the spec or the loss's defaults) are resolved to non-negative
    indices, so ``WeightedSum`` can request each stage once.

    Args:
        specs: ``--distill`` values.
        student, teacher: ``EmbeddingNet``-like models.

    Returns:
        ``[(weight, loss), ...]`` in the order of ``specs``.

    Raises:
        ConfigError: bad spec, an option the loss does not take, a size set by hand, a missing stage.
        RegistryError: unknown loss name.
    """
    built = []
    for spec in specs:
        name, weight, kwargs = parse_distill_spec(spec)
        factory = LOSSES.get(name)
        params = inspect.signature(factory.__init__).parameters
        fixed = [k for k in kwargs if k in _FROM_MODELS]
        if fixed:
            raise ConfigError(f"--distill {spec!r}: {', '.join(fixed)} are taken from the models; don't set them")
        unknown = [k for k in kwargs if k not in params or k == "self"]
        if unknown:
            valid = [k for k in params if k not in ("self", *_FROM_MODELS)]
            raise ConfigError(f"--distill {spec!r}: {name} has no option {', '.join(unknown)}; "
                              f"valid options: {', '.join(valid) or '(none)'}")
        args = dict(kwargs)
        for who, model in (("student", student), ("teacher", teacher)):
            if f"{who}_dim" in params:
                args[f"{who}_dim"] = int(model.embedding_dim)
            for key in (f"{who}_stage", f"{who}_stages"):
                if key not in params:
                    continue
                value = args.get(key, params[key].default)
                if key.endswith("s"):
                    items = (value,) if isinstance(value, int) else tuple(value)
                    args[key] = tuple(_resolve_stage(model, i, who, spec) for i in items)
                else:
                    args[key] = _resolve_stage(model, value, who, spec)
            if f"{who}_channels" in params:
                args[f"{who}_channels"] = int(model.feature_info[args[f"{who}_stage"]]["num_chs"])
        built.append((weight, factory(**args)))
    return built


def _stages(loss: nn.Module, who: str) -> Tuple[int, ...]:
    return tuple(getattr(loss, f"{who}_stages", None) or getattr(loss, "feature_stages", ()) or ())


class WeightedSum(nn.Module):
    """The training objective: the student's task loss plus weighted distillation losses.

    The parameters of this module (e.g. ``absolute``'s projection, ``hint``'s regressor) are
    trained with the student: give ``self.parameters()`` to the optimizer; they are not part of the
    exported student.

    Args:
        task_loss: ``(embeddings, labels) -> {name: scalar}`` on the student (e.g. ``TripletLoss``),
            or ``None`` for pure distillation.
        distill_losses: ``[(weight, DistillLoss), ...]``, e.g. from ``build_distill_losses``.

    Raises:
        ConfigError: two losses with the same name, or a loss named ``loss`` / ``task``.
    """

    def __init__(self, task_loss: Optional[Callable], distill_losses: Sequence[Tuple[float, DistillLoss]]):
        super().__init__()
        self.task_loss = task_loss
        self.weights = [float(w) for w, _ in distill_losses]
        self.losses = nn.ModuleList([loss for _, loss in distill_losses])
        # On several processes: compute the in-batch terms on the rows of every rank (``gather_rows``).
        self.gather = False
        names = [loss.name for loss in self.losses]
        dup = sorted({n for n in names if names.count(n) > 1 or n in _RESERVED})
        if dup:
            raise ConfigError(f"distillation losses must have distinct names other than "
                              f"{'/'.join(_RESERVED)}; got {', '.join(dup)} more than once or reserved")

    @property
    def student_stages(self) -> Tuple[int, ...]:
        """Every student stage some loss needs, sorted (request these from the student)."""
        return tuple(sorted({i for loss in self.losses for i in _stages(loss, "student")}))

    @property
    def teacher_stages(self) -> Tuple[int, ...]:
        """Every teacher stage some loss needs, sorted (request these from the teacher)."""
        return tuple(sorted({i for loss in self.losses for i in _stages(loss, "teacher")}))

    @staticmethod
    def _pick(feats, wanted: Sequence[int], available: Sequence[int], who: str) -> Optional[List[torch.Tensor]]:
        # feats: {stage: map} (collect_features), or a list aligned with self.<who>_stages.
        if not wanted or feats is None:
            return None
        if isinstance(feats, Mapping):
            missing = [i for i in wanted if i not in feats]
            if missing:
                raise ConfigError(f"{who} feature maps of stages {missing} were not passed (got {sorted(feats)})")
            return [feats[i] for i in wanted]
        if len(feats) != len(available):
            raise ConfigError(f"expected {len(available)} {who} feature maps (stages {list(available)}), "
                              f"got {len(feats)}")
        position = {stage: k for k, stage in enumerate(available)}
        return [feats[position[i]] for i in wanted]

    def forward(self, s_emb: torch.Tensor, labels: Optional[torch.Tensor], t_emb: torch.Tensor,
                s_feats=None, t_feats=None, labeled_mask: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Every term for logging plus the total.

        Args:
            s_emb: (B, D_s) student embeddings.
            labels: (B,) labels (only rows with ``labeled_mask`` are read), or None without a task loss.
            t_emb: (B, D_t) teacher embeddings.
            s_feats, t_feats: ``{stage: (B, C, h, w)}`` (``collect_features``) or lists aligned with
                ``student_stages`` / ``teacher_stages``; only needed by feature-map losses.
            labeled_mask: (B,) bool; the task loss sees only these rows (semi-supervised: unlabeled
                images pass through the distillation losses only). None means all rows are labeled.

        Returns:
            The task loss's own terms, ``"task"`` (their sum; 0 without labeled rows), each
            distillation term unweighted (plus any ``last_terms`` a loss exposes, e.g. RKD's two
            parts), and ``"loss"`` = task + sum_i w_i * term_i.
        """
        out: Dict[str, torch.Tensor] = {}
        total = s_emb.new_zeros(())
        local = (s_emb, t_emb)
        if self.gather:  # in-batch terms see the global batch of every rank (feature-map terms stay local)
            s_emb, t_emb, labels, labeled_mask = map(gather_rows, (s_emb, t_emb, labels, labeled_mask))
        if self.task_loss is not None:
            task = s_emb.new_zeros(())
            rows = None if labeled_mask is None else labeled_mask.to(torch.bool)
            if rows is None or bool(rows.any()):
                task_terms = (self.task_loss(s_emb, labels) if rows is None
                              else self.task_loss(s_emb[rows], labels[rows]))
                out.update(task_terms)
                for value in task_terms.values():
                    task = task + value
            out["task"] = task
            total = total + task
        s_stages, t_stages = self.student_stages, self.teacher_stages
        known = labels  # what label-reading losses see: -1 where the row's label is not to be used
        if labels is not None and labeled_mask is not None:
            known = labels.masked_fill(~labeled_mask.to(torch.bool), -1)
        for weight, loss in zip(self.weights, self.losses):
            s_list = self._pick(s_feats, _stages(loss, "student"), s_stages, "student")
            t_list = self._pick(t_feats, _stages(loss, "teacher"), t_stages, "teacher")
            embeddings = local if s_list is not None or t_list is not None else (s_emb, t_emb)
            extra = {"labels": known} if getattr(loss, "uses_labels", False) else {}
            for name, value in loss(*embeddings, s_list, t_list, **extra).items():
                out[name] = value
                total = total + weight * value
            out.update(getattr(loss, "last_terms", None) or {})
        out["loss"] = total
        return out
