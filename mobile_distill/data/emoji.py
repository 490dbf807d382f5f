"""Emoji cross-vendor retrieval, the embedded default data set.

One class per emoji; its instances are the vendors' drawings (Google Noto, Twitter Twemoji),
from the npm packages ``emoji-datasource-<vendor>@16.0.0`` (64x64 RGBA PNGs, composited onto
white when loaded). Classes are split *alternately* in ``sort_order`` (even -> train, odd ->
test) so that both halves cover every category; with a first-half split every flag and most
symbols would land in the test half. Skin-tone variants of the *training* classes form the
unlabeled pool (a transfer set for distillation); test-class variants are left out so that
nothing of the test classes is seen during training.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, Optional

from .. import paths
from ..errors import DataError, MissingDependencyError
from ..utils.io import write_json_atomic
from . import register_dataset
from .archive import safe_extract, verify_checksum
from .base import DatasetSplits

VERSION = "16.0.0"
VENDORS = ("google", "twitter")
# sha256 of the npm tarballs of version 16.0.0 (npm's own integrity field is sha512 of the same bytes).
SHA256 = {
    "google": "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438",
    "twitter": "f64a530c63bca463bd8317fdc4615ce63a53a0c65018e4ce2d848aaba7a28877",
}
ATTRIBUTION = """# Emoji images: licences and attribution

Fetched from npm by `mdistill data fetch emoji` (emoji-datasource-*@{version}, by iamcal; metadata MIT).

- google/: Noto Emoji by Google, Apache License 2.0 (https://github.com/googlefonts/noto-emoji).
- twitter/: Twemoji by Twitter, Inc. and other contributors, CC-BY 4.0
  (https://creativecommons.org/licenses/by/4.0/); graphics changed here only by compositing onto white.
"""
SKIPPED_CATEGORIES = {"Component"}  # bare skin-tone / hair swatches, not pictures of anything


def package_name(vendor: str) -> str:
    return f"emoji-datasource-{vendor}"


def fetch(
    dest: Optional[Path] = None,
    tarballs: Optional[Dict[str, Path]] = None,
    checksums: Optional[Dict[str, str]] = None,
    force: bool = False,
) -> Path:
    """Fetch, verify and unpack the emoji images into ``dest`` (default ``$MDISTILL_HOME/data/emoji``).

    Args:
        tarballs: vendor -> already-downloaded npm tarball (skips ``npm pack``).
        checksums: vendor -> sha256 override (tests use their own fixture packages).
        force: fetch again even when ``dest`` already holds the data.

    Raises:
        MissingDependencyError: ``npm`` is not installed. DownloadError: checksum mismatch.
        DataError: unsafe or corrupt archive, or a package without the expected layout.
    """
    dest = Path(dest) if dest else paths.data_dir("emoji")
    if (dest / "index.json").exists() and not force:
        return dest
    checksums = {**SHA256, **(checksums or {})}
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".emoji-", dir=dest.parent) as work:
        work = Path(work)
        staging = work / "staging"
        staging.mkdir()
        for vendor in VENDORS:
            tarball = Path(tarballs[vendor]) if tarballs and vendor in tarballs else _npm_pack(vendor, work)
            verify_checksum(tarball, checksums[vendor], "sha256")
            unpacked = safe_extract(tarball, work / f"unpacked-{vendor}")
            images = unpacked / "package" / "img" / vendor / "64"
            if not images.is_dir():
                raise DataError(f"{tarball.name} has no package/img/{vendor}/64/ folder; is it an emoji-datasource package?")
            shutil.move(str(images), staging / vendor)
            if vendor == VENDORS[0]:
                shutil.move(str(unpacked / "package" / "emoji.json"), staging / "emoji.json")
        index = build_index(json.loads((staging / "emoji.json").read_text()), staging)
        write_json_atomic(staging / "index.json", index)
        (staging / "LICENSE.md").write_text(ATTRIBUTION.format(version=VERSION))
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    return dest


def _npm_pack(vendor: str, into: Path) -> Path:
    if shutil.which("npm") is None:
        raise MissingDependencyError(
            "npm is needed to fetch the emoji data; install Node.js and npm (e.g. apt-get install npm) and retry"
        )
    spec = f"{package_name(vendor)}@{VERSION}"
    proc = subprocess.run(
        ["npm", "pack", spec, "--pack-destination", str(into), "--silent"],
        capture_output=True, text=True,
    )
    tarball = into / f"{package_name(vendor)}-{VERSION}.tgz"
    if proc.returncode != 0 or not tarball.exists():
        raise DataError(f"`npm pack {spec}` failed: {proc.stderr.strip()[-500:] or 'no tarball written'}")
    return tarball


def build_index(entries: list, image_root: Path) -> dict:
    """Classes (emoji drawn by every vendor), their alternate split, and the unlabeled pool."""
    has_all = lambda img: all((image_root / v / img).is_file() for v in VENDORS)  # noqa: E731
    base = sorted(
        (e for e in entries if e.get("category") not in SKIPPED_CATEGORIES and has_all(e["image"])),
        key=lambda e: e["sort_order"],
    )
    classes, pool = [], []
    for i, e in enumerate(base):
        split = "train" if i % 2 == 0 else "test"
        classes.append({
            "id": i, "unified": e["unified"], "name": (e.get("name") or e["short_name"]).lower(),
            "category": e["category"], "image": e["image"], "split": split,
        })
        if split == "train":
            for variant in (e.get("skin_variations") or {}).values():
                pool += [f"{v}/{variant['image']}" for v in VENDORS if (image_root / v / variant["image"]).is_file()]
    return {"version": VERSION, "vendors": list(VENDORS), "classes": classes, "unlabeled": sorted(pool)}


@register_dataset
def emoji(path: Optional[Path]) -> DatasetSplits:
    root = Path(path) if path else paths.data_dir("emoji")
    index_file = root / "index.json"
    if not index_file.exists():
        raise DataError(f"emoji data not found at {root}; run `mdistill data fetch emoji` first")
    index = json.loads(index_file.read_text())
    train, test, domains = [], [], []
    for c in index["classes"]:
        for vendor in index["vendors"]:
            sample = (str(root / vendor / c["image"]), c["id"])
            if c["split"] == "train":
                train.append(sample)
            else:
                test.append(sample)
                domains.append(vendor)
    return DatasetSplits(
        name="emoji",
        root=root,
        train=train,
        test=test,
        unlabeled=[str(root / p) for p in index["unlabeled"]],
        class_names={c["id"]: c["name"] for c in index["classes"]},
        domains=domains,
        license=(root / "LICENSE.md").read_text() if (root / "LICENSE.md").exists() else "",
    )
