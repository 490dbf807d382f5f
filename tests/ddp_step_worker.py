"""One training step of a tiny student on 2 ranks (run by torchrun from tests/test_distributed.py).

Each rank takes its half of a fixed global batch (3 classes x 2 images + 2 unlabeled each, the
layout of ``RankBatches``), runs the DDP-wrapped student and the gathered objective, and saves its loss and
every gradient (student after DDP's all-reduce, objective after ``average_gradients``) to
``OUT/rank{r}-{bn}.pt``. ``build`` is shared with the test, which computes the 1-process
reference on the concatenated batch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

SPECS = ("absolute:1:center=true", "relative:1:normalize=true", "rkd:1", "hint:1")


def build():
    from mobile_distill.losses.combine import WeightedSum, build_distill_losses
    from mobile_distill.losses.metric import TripletLoss
    from mobile_distill.models import create_model

    torch.manual_seed(0)
    student = create_model("mobilenet_v1_025", 16, "none", 32)
    teacher = create_model("mobilenet_v1_025", 24, "none", 32).eval()  # other size: absolute learns a projection
    objective = WeightedSum(TripletLoss(margin=0.2, mining="all"), build_distill_losses(SPECS, student, teacher))
    g = torch.Generator().manual_seed(1)
    images = torch.rand(16, 3, 32, 32, generator=g)
    # In rank order, as RankBatches deals a global batch of 6 classes x K=2 + 4 unlabeled (-1) to 2 ranks.
    labels = torch.tensor([0, 0, 1, 1, 2, 2, -1, -1, 3, 3, 4, 4, 5, 5, -1, -1])
    with torch.no_grad():
        t_emb, t_maps = teacher.forward_intermediates(images, list(objective.teacher_stages))
    t_feats = dict(zip(objective.teacher_stages, t_maps))
    return student, objective, images, labels, t_emb, t_feats


def grads(student, objective):
    named = list(student.named_parameters()) + [(f"objective.{k}", p) for k, p in objective.named_parameters()]
    return {k: p.grad.detach().clone() for k, p in named if p.grad is not None}


def main(out: Path, bn: str) -> None:
    from mobile_distill import distributed as dd

    dd.init_distributed("cpu")
    r, w = dd.rank(), dd.world_size()
    student, objective, images, labels, t_emb, t_feats = build()
    rows = slice(r * len(images) // w, (r + 1) * len(images) // w)
    student.train(bn == "train")
    objective.gather = True
    from mobile_distill.train.ddp import wrap_student

    forward = wrap_student(student, objective.student_stages, torch.device("cpu"))
    forward.train(bn == "train")
    s_emb, s_feats = forward(images[rows])
    terms = objective(s_emb, labels[rows], t_emb[rows], s_feats, {k: v[rows] for k, v in t_feats.items()},
                      labeled_mask=labels[rows] >= 0)
    terms["loss"].backward()
    dd.average_gradients(objective.parameters())
    torch.save({"terms": {k: float(v) for k, v in terms.items()}, "grads": grads(student, objective)},
               out / f"rank{r}-{bn}.pt")
    dd.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
