"""The emoji data set: fetch from npm tarballs (PNG and SVG vendors), verify, split alternately,
unlabeled pool, licences, vendor specs."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile

import numpy as np
import pytest
from PIL import Image

from mobile_distill.data import create_dataset, emoji, load_image
from mobile_distill.data.emoji_vendors import DEFAULT_VENDORS, VENDORS
from mobile_distill.errors import DataError, DownloadError
from mobile_distill.utils.io import file_digest

TONES = {"1F3FB": "light", "1F3FC": "medium-light"}


def _png_rgba(colour) -> bytes:
    buf = io.BytesIO()
    img = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    img.paste(Image.new("RGBA", (32, 32), colour), (16, 16))
    img.save(buf, "PNG")
    return buf.getvalue()


def _svg(i: int, style: int) -> bytes:
    # a shape per emoji (circle size), a colour per style; transparent background
    r = 8 + 3 * i
    colour = ["#d03020", "#2050d0", "#20a040", "#000000"][style % 4]
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 72 72">'
            f'<circle cx="36" cy="36" r="{r}" fill="{colour}"/></svg>').encode()


def _entries(n=7):
    cats = ["Smileys & Emotion", "Flags", "Symbols"]
    out = []
    for i in range(n):
        e = {"unified": f"1F60{i}", "image": f"1f60{i}.png", "short_name": f"e{i}", "name": f"EMOJI {i}",
             "category": cats[i % 3], "sort_order": 100 - i}
        if i in (0, 1, 2):  # skin-tone variants: train-side and test-side emoji
            e["skin_variations"] = {t: {"unified": f"1F60{i}-{t}", "image": f"1f60{i}-{t.lower()}.png"} for t in TONES}
        out.append(e)
    out.append({"unified": "1F3FB", "image": "1f3fb.png", "short_name": "skin", "category": "Component",
                "sort_order": 0})
    return out


def _tar(path, files):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def _fake_packages(tmp_path, entries):
    """One fake tarball per npm package, in each package's real layout. Emoji 6 (1f606) is drawn
    by every vendor but Fluent, as the real country flags are: in no default class, in the
    two-vendor one."""
    tarballs = {}
    for key in ("google", "twitter", "apple", "facebook"):
        files = {"emoji.json": json.dumps(entries).encode(), "LICENSE": b"MIT (metadata)"}
        for e in entries:
            images = [e["image"]] + [v["image"] for v in e.get("skin_variations", {}).values()]
            for i, img in enumerate(images):
                files[f"img/{key}/64/{img}"] = _png_rgba((40 * i, 200 if key == "google" else 90, 60, 255))
        tarballs[VENDORS[key].package] = _tar(tmp_path / f"{key}.tgz", files)
    om = {"LICENSE.txt": b"CC-BY-SA-4.0", "data/openmoji.csv": b"emoji,hexcode,annotation\n"}
    fl = {"LICENSE": b"MIT"}
    for i, e in enumerate(entries[:-1]):
        code = e["unified"]
        om[f"color/svg/{code}.svg"] = _svg(i, 0)
        om["data/openmoji.csv"] += f"x,{code},thing number {i}\n".encode()
        if i == 6:
            continue
        variants = list(e.get("skin_variations", {}))
        for style, folder in enumerate(("flat", "modern", "high-contrast")):
            stem = f"thing-number-{i}"
            if variants and style < 2:
                fl[f"icons/{folder}/{stem}-default.svg"] = _svg(i, style + 1)
                for t in variants:
                    fl[f"icons/{folder}/{stem}-{TONES[t]}.svg"] = _svg(i, style + 1)
            else:
                fl[f"icons/{folder}/{stem}.svg"] = _svg(i, style + 1)
        for t in variants:
            om[f"color/svg/{code}-{t}.svg"] = _svg(i, 0)
    tarballs["openmoji"] = _tar(tmp_path / "openmoji.tgz", om)
    tarballs["fluentui-emoji"] = _tar(tmp_path / "fluent.tgz", fl)
    return tarballs


@pytest.fixture
def fake_tarballs(tmp_path):
    tarballs = _fake_packages(tmp_path, _entries())
    return tarballs, {name: file_digest(p) for name, p in tarballs.items()}


@pytest.fixture
def fetched(tmp_path, fake_tarballs):
    tarballs, sums = fake_tarballs
    return emoji.fetch(tmp_path / "emoji", tarballs=tarballs, checksums=sums)


def test_default_vendors_are_the_openly_licensed_ones():
    assert DEFAULT_VENDORS == ("google", "twitter", "openmoji", "fluent_color", "fluent_flat", "fluent_contrast")
    assert not VENDORS["apple"].open_license and not VENDORS["facebook"].open_license


def test_fetch_default_vendors_split_pool_and_coverage(fetched):
    splits = create_dataset(f"emoji:{fetched}")
    index = json.loads((fetched / "index.json").read_text())
    assert index["vendors"] == list(DEFAULT_VENDORS)
    # sorted by sort_order: 1f606 (94) ... 1f600 (100); Component swatches are left out; 1f606 has no
    # Fluent drawing so it is no class of the default set
    classes, pool = emoji.select(index, DEFAULT_VENDORS)
    assert [c["image"] for c in classes] == [f"1f60{i}.png" for i in (5, 4, 3, 2, 1, 0)]
    assert [c["split"] for c in classes] == ["train", "test"] * 3
    # vendor coverage: every class has exactly one drawing from each of the six vendors, in both splits
    for part in (splits.train, splits.test):
        per_class = {}
        for path, y in part:
            per_class.setdefault(y, []).append(path.split("/")[-2])
        assert all(sorted(v) == sorted(DEFAULT_VENDORS) for v in per_class.values())
    assert splits.summary()["train_images"] == 3 * 6 and splits.summary()["test_images"] == 3 * 6
    assert sorted(set(splits.domains)) == sorted(DEFAULT_VENDORS)
    # the pool: skin tones of the training emoji only (1f601; 1f600 and 1f602 are test classes),
    # from every vendor that draws them (Fluent's High Contrast has no skin tones)
    assert len(splits.unlabeled) == 2 * 5 and all("/1f601-" in p for p in splits.unlabeled)
    assert {p.split("/")[-2] for p in splits.unlabeled} == set(DEFAULT_VENDORS) - {"fluent_contrast"}


def test_train_test_and_pool_are_disjoint_by_class(fetched):
    for spec in (f"emoji:{fetched}", f"emoji:google,twitter:{fetched}"):
        s = create_dataset(spec)
        train, test = {y for _, y in s.train}, {y for _, y in s.test}
        assert train and test and not train & test
        assert len(s.unlabeled_classes) == len(s.unlabeled)
        assert set(s.unlabeled_classes) <= train and not set(s.unlabeled_classes) & test
        # and by file: no pool image is a variant of a test-class emoji
        test_stems = {p.split("/")[-1][:-4] for p, _ in s.test}
        assert not any(p.split("/")[-1].split("-")[0] in test_stems for p in s.unlabeled)


def test_two_vendor_spec_reproduces_the_first_release(fetched):
    s = create_dataset(f"emoji:google,twitter:{fetched}")
    # 7 emoji drawn by both: alternate split 4 train / 3 test, 2 drawings each; pool = skin tones of
    # the train emoji (1f606 is class 0 here, so 1f604, 1f602, 1f600 train)
    assert s.summary() == {"train_classes": 4, "train_images": 8, "test_classes": 3, "test_images": 6,
                           "unlabeled_images": 8}
    assert s.name == "emoji:google,twitter"
    assert s.unlabeled == sorted(s.unlabeled)  # the first release's pool order


def test_rasterised_svgs_are_non_blank_rgb_on_white(fetched):
    for vendor in ("openmoji", "fluent_color", "fluent_flat", "fluent_contrast"):
        files = sorted((fetched / vendor).glob("*.png"))
        assert files, vendor
        for f in files:
            with Image.open(f) as raw:
                assert raw.size == (64, 64) and raw.mode == "RGBA"
            img = load_image(f)
            assert img.mode == "RGB"
            a = np.asarray(img)
            assert tuple(a[0, 0]) == (255, 255, 255)  # transparent corner -> white
            assert (a < 200).any(axis=2).mean() > 0.02  # a drawing, not a blank canvas


def test_licence_files(fetched):
    text = (fetched / "LICENSE.md").read_text()
    for key in DEFAULT_VENDORS:
        assert f"{key}/" in text and VENDORS[key].license.split(",")[0] in text
        assert (fetched / key / VENDORS[key].license_file).is_file(), key
    for phrase in ("Apache License 2.0", "CC-BY 4.0", "CC-BY-SA 4.0", "MIT"):
        assert phrase in text
    assert "not openly licensed" not in text  # no opt-in vendor fetched


def test_opt_in_vendors_add_to_the_data_with_a_caveat(fetched, fake_tarballs, capsys):
    tarballs, sums = fake_tarballs
    emoji.fetch(fetched, vendors=["apple", "facebook"], tarballs=tarballs, checksums=sums)
    assert "not openly licensed" in capsys.readouterr().err
    assert "not openly licensed" in (fetched / "LICENSE.md").read_text()
    index = json.loads((fetched / "index.json").read_text())
    assert set(index["vendors"]) == set(DEFAULT_VENDORS) | {"apple", "facebook"}
    assert create_dataset(f"emoji:{fetched}").name == "emoji"  # the default spec still means the six open ones
    s = create_dataset(f"emoji:google,apple,facebook:{fetched}")
    assert sorted(set(s.domains)) == ["apple", "facebook", "google"]


def test_unfetched_vendor_and_unknown_vendor_are_clear_errors(tmp_path, fake_tarballs):
    tarballs, sums = fake_tarballs
    root = emoji.fetch(tmp_path / "e2", vendors=["google", "twitter"], tarballs=tarballs, checksums=sums)
    with pytest.raises(DataError, match="openmoji.*not fetched.*mdistill data fetch emoji"):
        create_dataset(f"emoji:{root}")
    with pytest.raises(DataError, match="unknown emoji vendor 'noto'"):
        emoji.fetch(root, vendors=["noto"])


def test_fetch_checksum_mismatch_leaves_nothing(tmp_path, fake_tarballs):
    tarballs, _ = fake_tarballs
    with pytest.raises(DownloadError, match="checksum mismatch"):
        emoji.fetch(tmp_path / "emoji", tarballs=tarballs)  # the pinned real-package sums
    assert not (tmp_path / "emoji" / "index.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".emoji")] == []


def test_fetch_rejects_unsafe_archive(tmp_path, fake_tarballs):
    tarballs, sums = fake_tarballs
    evil = tmp_path / "evil.tgz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../../outside.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    tarballs["emoji-datasource-google"] = str(evil)
    sums["emoji-datasource-google"] = file_digest(evil)
    with pytest.raises(DataError, match="outside.txt"):
        emoji.fetch(tmp_path / "emoji", tarballs=tarballs, checksums=sums)
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "emoji" / "index.json").exists()


def test_missing_npm_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm on PATH
    with pytest.raises(Exception, match="npm is needed"):
        emoji.fetch(tmp_path / "emoji")


def test_not_fetched_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="mdistill data fetch emoji"):
        create_dataset(f"emoji:{tmp_path}")


def test_old_release_data_asks_for_a_refetch(tmp_path):
    (tmp_path / "index.json").write_text(json.dumps({"version": "16.0.0", "vendors": ["google", "twitter"],
                                                     "classes": [], "unlabeled": []}))
    with pytest.raises(DataError, match="older release.*--force"):
        create_dataset(f"emoji:{tmp_path}")


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.skipif(shutil.which("npm") is None and os.environ.get("MDISTILL_LOCAL") == "1",
                    reason="npm not installed (MDISTILL_LOCAL=1)")  # CI has npm: there a missing npm fails
def test_real_fetch_from_npm(tmp_path):
    """The real packages from the npm registry (reachable on this project's machines and CI)."""
    root = emoji.fetch(tmp_path / "emoji")
    s = create_dataset(f"emoji:{root}", progress=False)
    summary = s.summary()
    assert summary["train_classes"] == 783 and summary["test_classes"] == 783
    assert summary["train_images"] == 6 * 783 and summary["unlabeled_images"] > 3000
    assert set(s.unlabeled_classes) <= {y for _, y in s.train}
    old = create_dataset(f"emoji:google,twitter:{root}", progress=False).summary()
    assert old == {"train_classes": 953, "train_images": 1906, "test_classes": 953, "test_images": 1906,
                   "unlabeled_images": 1860}
