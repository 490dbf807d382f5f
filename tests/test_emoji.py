"""The emoji data set: fetch from npm tarballs, verify, split alternately, unlabeled pool."""

from __future__ import annotations

import io
import json
import shutil
import tarfile

import pytest
from PIL import Image

from mobile_distill.data import create_dataset, emoji
from mobile_distill.errors import DataError, DownloadError
from mobile_distill.utils.io import file_digest


def _png_rgba(colour) -> bytes:
    buf = io.BytesIO()
    img = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    img.paste(Image.new("RGBA", (32, 32), colour), (16, 16))
    img.save(buf, "PNG")
    return buf.getvalue()


def _entries(n=6):
    cats = ["Smileys & Emotion", "Flags", "Symbols"]
    out = []
    for i in range(n):
        e = {"unified": f"1F60{i}", "image": f"1f60{i}.png", "short_name": f"e{i}", "name": f"EMOJI {i}",
             "category": cats[i % 3], "sort_order": 100 - i}
        if i in (0, 1):  # skin-tone variants of one train-side and one test-side emoji
            e["skin_variations"] = {"1F3FB": {"image": f"1f60{i}-1f3fb.png"}}
        out.append(e)
    out.append({"unified": "1F3FB", "image": "1f3fb.png", "short_name": "skin", "category": "Component",
                "sort_order": 0})
    return out


def _fake_package(tmp_path, vendor: str, entries) -> str:
    path = tmp_path / f"{vendor}.tgz"
    with tarfile.open(path, "w:gz") as tar:
        def add(name, data):
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add("emoji.json", json.dumps(entries).encode())
        for e in entries:
            images = [e["image"]] + [v["image"] for v in e.get("skin_variations", {}).values()]
            for i, img in enumerate(images):
                add(f"img/{vendor}/64/{img}", _png_rgba((40 * i, 200 if vendor == "google" else 90, 60, 255)))
    return str(path)


@pytest.fixture
def fake_tarballs(tmp_path):
    entries = _entries()
    tarballs = {v: _fake_package(tmp_path, v, entries) for v in emoji.VENDORS}
    sums = {v: file_digest(p) for v, p in tarballs.items()}
    return tarballs, sums


def test_fetch_builds_alternate_split_and_pool(tmp_path, fake_tarballs):
    tarballs, sums = fake_tarballs
    root = emoji.fetch(tmp_path / "emoji", tarballs=tarballs, checksums=sums)
    splits = create_dataset(f"emoji:{root}")
    index = json.loads((root / "index.json").read_text())
    # sorted by sort_order: 1f605 (95) ... 1f600 (100); Component swatches are left out
    order = [c["image"] for c in index["classes"]]
    assert order == [f"1f60{i}.png" for i in (5, 4, 3, 2, 1, 0)]
    assert [c["split"] for c in index["classes"]] == ["train", "test"] * 3
    assert splits.summary() == {"train_classes": 3, "train_images": 6, "test_classes": 3, "test_images": 6,
                                "unlabeled_images": 2}
    # only the train-class emoji's skin variant (1f601 is class 4 -> train) is in the pool
    assert all("1f601-1f3fb" in p for p in splits.unlabeled)
    assert sorted(set(splits.domains)) == ["google", "twitter"]
    # transparent pixels become white
    from mobile_distill.data import load_image

    assert load_image(splits.train[0][0]).getpixel((0, 0)) == (255, 255, 255)
    assert "CC-BY" in (root / "LICENSE.md").read_text()


def test_fetch_checksum_mismatch_leaves_nothing(tmp_path, fake_tarballs):
    tarballs, sums = fake_tarballs
    with pytest.raises(DownloadError, match="checksum mismatch"):
        emoji.fetch(tmp_path / "emoji", tarballs=tarballs)  # the pinned real-package sums
    assert not (tmp_path / "emoji").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".emoji")] == []


def test_fetch_rejects_unsafe_archive(tmp_path, fake_tarballs):
    tarballs, sums = fake_tarballs
    evil = tmp_path / "evil.tgz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../../outside.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    tarballs["google"] = str(evil)
    sums["google"] = file_digest(evil)
    with pytest.raises(DataError, match="outside.txt"):
        emoji.fetch(tmp_path / "emoji", tarballs=tarballs, checksums=sums)
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "emoji").exists()


def test_missing_npm_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm on PATH
    with pytest.raises(Exception, match="npm is needed"):
        emoji.fetch(tmp_path / "emoji")


def test_not_fetched_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="mdistill data fetch emoji"):
        create_dataset(f"emoji:{tmp_path}")


@pytest.mark.network
@pytest.mark.skipif(shutil.which("npm") is None, reason="npm not installed")
def test_real_fetch_from_npm(tmp_path):
    """The real packages from the npm registry (reachable on this project's machines and CI)."""
    root = emoji.fetch(tmp_path / "emoji")
    s = create_dataset(f"emoji:{root}", progress=False).summary()
    assert s["train_classes"] == 953 and s["test_classes"] == 953
    assert s["train_images"] == 2 * 953 and s["unlabeled_images"] > 1000
