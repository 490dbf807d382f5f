"""The on-disk builders load tiny fixtures written in exactly the official layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
from _fixtures import make_cars, make_cub, make_sop, write_image

from mobile_distill.data.cars import cars
from mobile_distill.data.cub import cub
from mobile_distill.data.folder import folder
from mobile_distill.data.sop import sop
from mobile_distill.errors import DataError


def _classes(samples):
    return sorted({y for _, y in samples})


def _check_common(splits, n_train_images, n_test_images):
    assert len(splits.train) == n_train_images
    assert len(splits.test) == n_test_images
    assert not set(_classes(splits.train)) & set(_classes(splits.test))
    assert [s[0] for s in splits.train] == sorted(s[0] for s in splits.train)
    for p, y in splits.train + splits.test:
        assert isinstance(p, str) and isinstance(y, int) and Path(p).is_file()


# --- CUB ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["root", "parent"])
def test_cub_first_half_trains(tmp_path, level):
    root = make_cub(tmp_path)
    splits = cub(root if level == "root" else tmp_path)
    _check_common(splits, 9, 9)
    assert _classes(splits.train) == [1, 2, 3]
    assert _classes(splits.test) == [4, 5, 6]
    assert splits.class_names[1] == "Bird_1"
    assert splits.recall_ks == (1, 2, 4, 8)
    assert splits.root == root.resolve()
    assert all("/images/001.Bird_1/" in p for p, y in splits.train if y == 1)


def test_cub_missing_index_file_is_named(tmp_path):
    root = make_cub(tmp_path)
    (root / "image_class_labels.txt").unlink()
    with pytest.raises(DataError, match=r"missing image_class_labels\.txt.*expected CUB_200_2011/"):
        cub(root)


def test_cub_not_a_cub_folder(tmp_path):
    with pytest.raises(DataError, match=r"missing images\.txt"):
        cub(tmp_path)


def test_cub_images_not_extracted(tmp_path):
    import shutil

    root = make_cub(tmp_path)
    shutil.rmtree(root / "images")
    with pytest.raises(DataError, match="is missing; extract the images"):
        cub(root)


def test_cub_damaged_line_names_file_and_line(tmp_path):
    root = make_cub(tmp_path)
    with open(root / "images.txt", "a") as f:
        f.write("99\n")
    with pytest.raises(DataError, match=r"bad line 19 in .*images\.txt"):
        cub(root)


def test_default_location_not_prepared(tmp_path, monkeypatch):
    monkeypatch.setenv("MDISTILL_HOME", str(tmp_path / "home"))
    for builder, name in ((cub, "cub"), (cars, "cars"), (sop, "sop")):
        with pytest.raises(DataError, match=rf"mdistill data prepare {name} --archive PATH"):
            builder(None)


def test_default_location_prepared(tmp_path, monkeypatch):
    monkeypatch.setenv("MDISTILL_HOME", str(tmp_path / "home"))
    make_cub(tmp_path / "home" / "data" / "cub")
    assert len(cub(None).train) == 9


# --- Cars --------------------------------------------------------------------------------------


def test_cars_first_half_trains_and_ignores_test_flag(tmp_path):
    root = make_cars(tmp_path / "cars196")
    splits = cars(root)
    _check_common(splits, 9, 9)
    assert _classes(splits.train) == [1, 2, 3]
    assert _classes(splits.test) == [4, 5, 6]
    assert splits.class_names[4] == "Make Model 4 2012"
    assert all(Path(p).parent.name == "car_ims" for p, _ in splits.train)
    # 000001.jpg is class 1 in the fixture's interleaved order
    assert (str(root.resolve() / "car_ims" / "000001.jpg"), 1) in splits.train


def test_cars_missing_mat(tmp_path):
    root = make_cars(tmp_path / "cars196")
    (root / "cars_annos.mat").unlink()
    with pytest.raises(DataError, match=r"missing cars_annos\.mat"):
        cars(root)


def test_cars_wrong_struct(tmp_path):
    from scipy.io import savemat

    import numpy as np

    root = tmp_path / "cars196"
    root.mkdir()
    annos = np.zeros((1, 2), dtype=[("fname", object), ("class", object)])
    annos[0, 0] = ("00001.jpg", 1)
    annos[0, 1] = ("00002.jpg", 2)
    savemat(root / "cars_annos.mat", {"annotations": annos})
    with pytest.raises(DataError, match="lacks field.*relative_im_path"):
        cars(root)


def test_cars_garbage_mat(tmp_path):
    root = tmp_path / "cars196"
    root.mkdir()
    (root / "cars_annos.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(DataError, match=r"cannot read .*cars_annos\.mat"):
        cars(root)


# --- SOP ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["root", "parent"])
def test_sop_official_split(tmp_path, level):
    root = make_sop(tmp_path)
    splits = sop(root if level == "root" else tmp_path)
    _check_common(splits, 8, 8)
    assert _classes(splits.train) == [1, 2, 3, 4]
    assert _classes(splits.test) == [5, 6, 7, 8]
    assert splits.recall_ks == (1, 10, 100, 1000)
    assert splits.class_names[1] == "bicycle 1" and splits.class_names[2] == "chair 2"


def test_sop_missing_test_file(tmp_path):
    root = make_sop(tmp_path)
    (root / "Ebay_test.txt").unlink()
    with pytest.raises(DataError, match=r"missing Ebay_test\.txt.*Ebay_train\.txt and Ebay_test\.txt"):
        sop(root)


def test_sop_headerless_file(tmp_path):
    root = make_sop(tmp_path)
    lines = (root / "Ebay_test.txt").read_text().splitlines()
    (root / "Ebay_test.txt").write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(DataError, match="expected the header"):
        sop(root)


# --- folder ------------------------------------------------------------------------------------


def test_folder_alternate_split_ignores_non_images(tmp_path):
    for i, name in enumerate(["ant", "bee", "cat", "dog", "eel"]):
        for k in range(2):
            write_image(tmp_path / name / f"{k}.PNG" if k else tmp_path / name / f"{k}.jpg", 10 * i + k)
        (tmp_path / name / "notes.txt").write_text("not an image")
        (tmp_path / name / "._0.jpg").write_bytes(b"macOS resource fork")
    (tmp_path / "README.md").write_text("top-level file, not a class")
    (tmp_path / "empty").mkdir()  # no images: not a class
    splits = folder(tmp_path)
    assert splits.class_names == {0: "ant", 1: "bee", 2: "cat", 3: "dog", 4: "eel"}
    assert _classes(splits.train) == [0, 2, 4]  # even positions
    assert _classes(splits.test) == [1, 3]
    assert len(splits.train) == 6 and len(splits.test) == 4
    assert not any(p.endswith((".txt", "._0.jpg")) for p, _ in splits.train + splits.test)


def test_folder_explicit_split(tmp_path):
    for split, names in (("train", ["a", "b", "c"]), ("test", ["x", "y"])):
        for name in names:
            write_image(tmp_path / split / name / "img.webp", ord(name))
            write_image(tmp_path / split / name / "sub" / "img2.tif", 1 + ord(name))
    splits = folder(tmp_path)
    assert splits.class_names == {0: "a", 1: "b", 2: "c", 3: "x", 4: "y"}
    assert _classes(splits.train) == [0, 1, 2] and _classes(splits.test) == [3, 4]
    assert len(splits.train) == 6 and len(splits.test) == 4


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="needs a path"):
        folder(None)
    with pytest.raises(DataError, match="not found"):
        folder(tmp_path / "nope")
    write_image(tmp_path / "train" / "a" / "1.png", 1)
    with pytest.raises(DataError, match="no test/ folder"):
        folder(tmp_path)
    write_image(tmp_path / "test" / "b" / "1.png", 2)
    write_image(tmp_path / "test" / "c" / "1.png", 3)
    with pytest.raises(DataError, match="train split .* 1 class"):
        folder(tmp_path)


def test_create_dataset_spec(tmp_path):
    import mobile_distill.data.emoji  # noqa: F401  (_import_builders imports every builder)
    from mobile_distill.data import create_dataset

    make_cub(tmp_path)
    splits = create_dataset(f"cub:{tmp_path}", progress=False)
    assert splits.summary()["train_classes"] == 3
