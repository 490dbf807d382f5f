"""The glyph set that benchmarks/other_data.py builds to check the recipes off emoji: a real
folder data set (one class per character, one image per font), with no two classes drawn alike."""

from __future__ import annotations

import numpy as np
from PIL import Image

from conftest import load_benchmark


def _module():
    return load_benchmark("other_data")


def test_glyph_set_is_a_folder_data_set_of_distinct_classes(tmp_path):
    from mobile_distill.data import create_dataset

    summary = _module().build_glyphs(tmp_path / "g", seed=0)
    assert summary["classes"] >= 150 and summary["images_per_class"][0] >= 8 and summary["fonts"] >= 15
    data = create_dataset(f"folder:{tmp_path / 'g'}", progress=False)
    assert len(data.train) + len(data.test) == summary["images"]
    assert not {y for _, y in data.train} & {y for _, y in data.test}
    # homoglyphs dropped: Latin A stays, Greek Alpha and Cyrillic A (drawn the same) are gone; Greek
    # Gamma and Cyrillic Zhe, drawn like nothing before them, stay
    classes = {p.name for p in (tmp_path / "g").iterdir()}
    assert "U+0041" in classes and not {"U+0391", "U+0410"} & classes and {"U+0393", "U+0416"} <= classes
    image = np.asarray(Image.open(next((tmp_path / "g").glob("*/STIXGeneral.png"))))
    assert image.shape == (64, 64, 3) and image.min() < 64 and (image[0] == 255).all()  # ink on white
    again = _module().build_glyphs(tmp_path / "h", seed=0)
    assert again == summary and (tmp_path / "h" / "U+0041" / "cmr10.png").read_bytes() == \
        (tmp_path / "g" / "U+0041" / "cmr10.png").read_bytes()
