from collections import Counter

import pytest
import yaml

from mobile_distill.config import TrainConfig, builtin_config, load_yaml, make_config
from mobile_distill.data.sampler import PKBatchSampler
from mobile_distill.errors import ConfigError


def _labels(n_classes=10, per=5):
    return [c for c in range(n_classes) for _ in range(per)]


@pytest.mark.parametrize("epoch_pass,expected", [("classes", 2), ("images", 5)])
def test_pk_batches_have_p_classes_k_images(epoch_pass, expected):
    labels = _labels()
    s = PKBatchSampler(labels, classes_per_batch=4, images_per_class=3, seed=1, epoch_pass=epoch_pass)
    batches = list(s)
    # classes: 10 classes // 4; images: 2 groups of 3 per class of 5 (the 2nd overlapping) = 20 // 4
    assert len(batches) == len(s) == expected
    for b in batches:
        counts = Counter(labels[i] for i in b)
        assert len(counts) == 4 and set(counts.values()) == {3}
        assert len(set(b)) == len(b)  # no image twice when a class has enough


def test_an_epoch_is_one_pass_over_the_images_of_a_folder_data_set(tmp_path):
    """Many images per class (as CUB): an epoch is images // (P*K) batches that together show every
    training image once, up to the P*K rounding, not one batch per pass over the classes."""
    from conftest import make_shapes_dataset

    from mobile_distill.data import create_dataset

    root = make_shapes_dataset(tmp_path / "many", n_classes=10, per_class=23, size=8)
    # uneven classes too: drop some images from two training classes
    for victim, keep in (("class_00", 7), ("class_02", 16)):
        for p in sorted((root / victim).iterdir())[keep:]:
            p.unlink()
    train = create_dataset(f"folder:{root}", progress=False).train
    labels = [y for _, y in train]
    p, k = 3, 4
    s = PKBatchSampler(labels, classes_per_batch=p, images_per_class=k, seed=0)
    # groups of K per class: 2 + 4 + 6 + 6 + 6 = 24 -> 8 batches of 3 groups (~ 92 images // 12 = 7),
    # not 5 classes // 3 = 1 batch as a pass over the classes would be
    assert len(s) == 8 and len(train) == 92
    assert len(PKBatchSampler([0] * 8 + [1] * 8 + [2] * 8, 2, 4)) == 3  # 24 images // 8: 6 groups // 2
    for epoch in range(3):
        s.set_epoch(epoch)
        batches = list(s)
        assert len(batches) == len(s)
        seen = Counter(i for b in batches for i in b)
        for b in batches:
            counts = Counter(labels[i] for i in b)
            assert len(counts) == p and set(counts.values()) == {k}
        # every image once; the rounding leaves fewer than P*K unseen, and repeats only to fill
        # the last group of a class whose size is not a multiple of K
        assert len(train) - len(seen) < p * k
        assert max(seen.values()) <= 2 and sum(v - 1 for v in seen.values()) < len(set(labels)) * k
    assert len(PKBatchSampler(labels, p, k, epoch_pass="classes")) == 1  # the old definition


def test_pk_deterministic_per_seed_and_epoch():
    labels = _labels()
    a = PKBatchSampler(labels, 4, 2, seed=3)
    b = PKBatchSampler(labels, 4, 2, seed=3)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(PKBatchSampler(labels, 4, 2, seed=4)) != list(PKBatchSampler(labels, 4, 2, seed=3))


def test_pk_small_classes_and_fixed_length():
    labels = [0, 1, 1, 2, 2, 2]
    s = PKBatchSampler(labels, 2, 3, seed=0, batches_per_epoch=7)
    batches = list(s)
    assert len(batches) == 7  # more than one pass: passes restart
    for b in batches:
        counts = Counter(labels[i] for i in b)
        assert len(counts) == 2 and set(counts.values()) == {3}


def test_pk_rejects_more_classes_than_exist():
    with pytest.raises(ConfigError, match="only 3 classes"):
        PKBatchSampler([0, 1, 2], 4, 2)


def test_config_precedence_and_errors(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"epochs": 7, "lr": 0.01, "model": "resnet18"}))
    cfg = make_config(load_yaml(f), epochs=3, model=None)
    assert (cfg.epochs, cfg.lr, cfg.model) == (3, 0.01, "resnet18")
    assert cfg.batch_size == cfg.classes_per_batch * cfg.images_per_class
    with pytest.raises(ConfigError, match="unknown config key.*epochz"):
        make_config({"epochz": 3})
    with pytest.raises(ConfigError, match="optimizer must be one of"):
        make_config(optimizer="lion")
    with pytest.raises(ConfigError, match="epochs must be int"):
        make_config(epochs="many")
    with pytest.raises(ConfigError, match="config file not found"):
        load_yaml(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(tmp_path / "bad.yaml")


def test_builtin_teacher_config_is_valid():
    assert builtin_config("teacher_emoji") is not None
    cfg = make_config(load_yaml("teacher_emoji"))
    assert isinstance(cfg, TrainConfig) and cfg.data == "emoji"


def test_builtin_student_config_needs_a_teacher():
    with pytest.raises(ConfigError, match="needs --teacher"):
        make_config(load_yaml("student_emoji"))
    cfg = make_config(load_yaml("student_emoji"), teacher="runs/teacher/last.pt")
    assert cfg.distill and cfg.model == "mobilenet_v1_025"
