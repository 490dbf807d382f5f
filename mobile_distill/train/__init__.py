"""Training: one loop for teachers (metric learning) and students (distillation).

    from mobile_distill.config import load_yaml, make_config
    from mobile_distill.train import main
    results = main(make_config(load_yaml("student_emoji"), teacher="runs/teacher/last.pt"))

``loop.py`` (the loop, ``main``), ``setup.py`` (its set-up phases), ``teacher.py`` (the frozen
teacher and its caches), ``baseline.py`` (evaluation and the untuned-features baseline),
``selection.py`` (the validation split and which epoch a run keeps), ``folds.py`` (``--val-folds``),
``ddp.py`` (several processes: batches per rank, the DDP wrapper, the torchrun launcher).
"""

from .loop import main, mix_unlabeled, train_one_epoch
from .setup import initial_model, memory_format_for, training_samples

__all__ = ["main", "train_one_epoch", "mix_unlabeled", "initial_model", "memory_format_for", "training_samples"]
