"""Emoji cross-vendor retrieval, the embedded default data set.

One class per emoji; its instances are the vendors' drawings. The default set is every openly
licensed style on npm: Google Noto, Twitter Twemoji, OpenMoji and Microsoft Fluent (Color, Flat
and High Contrast), six drawings per class; Apple and Facebook are opt-in (not openly licensed).
A spec picks the vendors: ``emoji`` (the default six), ``emoji:google,twitter`` (the first
release's two-vendor set, which reproduces its published figures), ``emoji:PATH`` or
``emoji:google,twitter:PATH``.

A class is an emoji that *every* selected vendor draws (Fluent has no country flags, so those
drop out of the default set). Classes are split *alternately* in ``sort_order`` (even -> train,
odd -> test) so that both halves cover every category. The unlabeled pool (a transfer set for
distillation) holds the skin-tone variants of the *training* classes from every selected vendor;
nothing of a test class is ever in it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .. import paths
from ..errors import DataError, MissingDependencyError
from ..utils.io import write_json_atomic, write_text_atomic
from . import register_dataset
from .archive import safe_extract, verify_checksum
from .base import DatasetSplits
from .emoji_vendors import (CAVEAT, DEFAULT_VENDORS, METADATA_PACKAGE, NAMES_PACKAGE, VENDORS, cldr_names,
                            images_of, install_images, license_text, looks_like_vendor_list, parse_vendors)

FORMAT = 2  # index.json layout; format 1 (google + twitter only) is rebuilt by fetch
SKIPPED_CATEGORIES = {"Component"}  # bare skin-tone / hair swatches, not pictures of anything


def fetch(dest: Optional[Path] = None, vendors: Sequence[str] = DEFAULT_VENDORS,
          tarballs: Optional[Dict[str, Path]] = None, checksums: Optional[Dict[str, str]] = None,
          force: bool = False, progress: bool = False) -> Path:
    """Fetch, verify and unpack the emoji drawings of ``vendors`` into ``dest``.

    Vendors already there are kept (unless ``force``), so asking for more later only fetches
    those. Each vendor's folder appears complete or not at all, and ``index.json`` is rewritten
    last.

    Args:
        dest: default ``$MDISTILL_HOME/data/emoji``.
        vendors: vendor keys (``emoji_vendors.VENDORS``).
        tarballs: npm package name -> already-downloaded tarball (skips ``npm pack``).
        checksums: npm package name -> sha256 override (tests use their own fixture packages).
        force: fetch every requested vendor again.

    Raises:
        MissingDependencyError: ``npm`` (or resvg-py) is not installed. DownloadError: checksum
        mismatch. DataError: unknown vendor, unsafe or corrupt archive, unexpected package layout.
    """
    vendors = parse_vendors(",".join(vendors))
    dest = Path(dest) if dest else paths.data_dir("emoji")
    index = _read_index(dest)
    present = [] if force or index is None else list(index["vendors"])
    missing = [v for v in vendors if v not in present]
    if not missing:
        return dest
    closed = [v for v in missing if not VENDORS[v].open_license]
    if closed:
        print("note: " + CAVEAT.format(names=", ".join(closed)), file=sys.stderr)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".emoji-", dir=dest.parent) as work:
        work = Path(work)
        unpacked: Dict[str, Path] = {}

        def package(vendor_key: str) -> Path:  # unpack each npm package once (Fluent's 3 styles share one)
            v = VENDORS[vendor_key]
            if v.package not in unpacked:
                given = (tarballs or {}).get(v.package)
                tarball = Path(given) if given else _npm_pack(v.package, v.version, work)
                verify_checksum(tarball, (checksums or {}).get(v.package, v.sha256), "sha256")
                unpacked[v.package] = safe_extract(tarball, work / f"unpacked-{v.package}") / "package"
            return unpacked[v.package]

        meta = dest / "emoji.json"
        if not meta.is_file() or force:
            src = package(METADATA_PACKAGE) / "emoji.json"
            if not src.is_file():
                raise DataError(f"{VENDORS[METADATA_PACKAGE].package} has no emoji.json; is it an emoji-datasource package?")
            write_text_atomic(meta, src.read_text(encoding="utf-8"))
        entries = _base_entries(json.loads(meta.read_text(encoding="utf-8")))
        names = None
        if any(VENDORS[v].kind == "fluent" for v in missing):
            names = cldr_names(package(NAMES_PACKAGE))
        for key in missing:
            v = VENDORS[key]
            staging = work / "staging" / key
            count = install_images(v, package(key), entries, staging, names, progress)
            if count == 0:
                raise DataError(f"{v.package}@{v.version} gave no {key} images; is it the right package?")
            licence = package(key) / v.license_file
            if licence.is_file():
                shutil.copyfile(licence, staging / v.license_file)
            if (dest / key).exists():
                shutil.rmtree(dest / key)
            staging.rename(dest / key)
            present.append(key)
    present = [v for v in VENDORS if v in present]  # a stable order
    write_text_atomic(dest / "LICENSE.md", license_text(present, "Fetched from npm by `mdistill data fetch emoji`; "
                                                        "emoji metadata from emoji-datasource (MIT)."))
    write_json_atomic(dest / "index.json", build_index(entries, dest, present))
    return dest


def _npm_pack(name: str, version: str, into: Path) -> Path:
    if shutil.which("npm") is None:
        raise MissingDependencyError(
            "npm is needed to fetch the emoji data; install Node.js and npm (e.g. apt-get install npm) and retry"
        )
    spec = f"{name}@{version}"
    proc = subprocess.run(["npm", "pack", spec, "--pack-destination", str(into), "--silent"],
                          capture_output=True, text=True)
    tarball = into / f"{name}-{version}.tgz"
    if proc.returncode != 0 or not tarball.exists():
        raise DataError(f"`npm pack {spec}` failed: {proc.stderr.strip()[-500:] or 'no tarball written'}")
    return tarball


def _base_entries(entries: list) -> list:
    return sorted((e for e in entries if e.get("category") not in SKIPPED_CATEGORIES), key=lambda e: e["sort_order"])


def build_index(entries: list, root: Path, vendors: Sequence[str]) -> dict:
    """Every emoji (in ``sort_order``) with the vendors whose drawing of it is on disk."""
    out = []
    for e in _base_entries(entries):
        drawn = [(image, [v for v in vendors if (root / v / image).is_file()]) for image, _, _ in images_of(e)]
        out.append({"unified": e["unified"], "name": (e.get("name") or e["short_name"]).lower(),
                    "category": e["category"], "sort_order": e["sort_order"], "image": drawn[0][0],
                    "drawn_by": drawn[0][1],
                    "variants": [{"image": img, "drawn_by": by} for img, by in drawn[1:] if by]})
    return {"format": FORMAT, "vendors": list(vendors),
            "packages": {v: f"{VENDORS[v].package}@{VENDORS[v].version}" for v in vendors}, "emoji": out}


def _read_index(root: Path) -> Optional[dict]:
    f = root / "index.json"
    if not f.is_file():
        return None
    index = json.loads(f.read_text())
    return index if index.get("format") == FORMAT else None


def select(index: dict, vendors: Sequence[str]) -> Tuple[List[dict], List[Tuple[str, str, int]]]:
    """The classes of a vendor selection and its pool.

    Returns:
        classes: ``{"id", "split", ...}`` per emoji drawn by every vendor, alternately split;
        pool: ``(vendor, image, class id)`` per skin-tone variant of a *training* class.
    """
    classes, pool = [], []
    for e in index["emoji"]:
        if not all(v in e["drawn_by"] for v in vendors):
            continue
        i = len(classes)
        split = "train" if i % 2 == 0 else "test"
        classes.append({**{k: e[k] for k in ("unified", "name", "category", "image")}, "id": i, "split": split})
        if split == "train":
            pool += [(v, var["image"], i) for var in e["variants"] for v in vendors if v in var["drawn_by"]]
    return classes, pool


def parse_emoji_spec(path: Optional[Path]) -> Tuple[Tuple[str, ...], Path]:
    """The part after ``emoji:``: ``VENDORS``, ``PATH`` or ``VENDORS:PATH``."""
    text = str(path) if path else ""
    head, sep, tail = text.partition(":")
    if text and looks_like_vendor_list(head):
        return parse_vendors(head), Path(tail).expanduser() if sep and tail else paths.data_dir("emoji")
    return DEFAULT_VENDORS, Path(text).expanduser() if text else paths.data_dir("emoji")


@register_dataset
def emoji(path: Optional[Path]) -> DatasetSplits:
    vendors, root = parse_emoji_spec(path)
    index_file = root / "index.json"
    if not index_file.exists():
        raise DataError(f"emoji data not found at {root}; run `mdistill data fetch emoji` first")
    index = _read_index(root)
    if index is None:
        raise DataError(f"emoji data at {root} is from an older release; run `mdistill data fetch emoji --force`")
    missing = [v for v in vendors if v not in index["vendors"]]
    if missing:
        raise DataError(f"emoji vendor(s) {', '.join(missing)} not fetched at {root}; run "
                        f"`mdistill data fetch emoji --vendors {','.join(vendors)}`")
    classes, pool = select(index, vendors)
    pool.sort(key=lambda item: f"{item[0]}/{item[1]}")  # the first release's order (reproducible runs)
    train, test, domains = [], [], []
    for c in classes:
        for v in vendors:
            sample = (str(root / v / c["image"]), c["id"])
            if c["split"] == "train":
                train.append(sample)
            else:
                test.append(sample)
                domains.append(v)
    return DatasetSplits(
        name="emoji" if tuple(vendors) == DEFAULT_VENDORS else f"emoji:{','.join(vendors)}",
        root=root,
        train=train,
        test=test,
        unlabeled=[str(root / v / image) for v, image, _ in pool],
        unlabeled_classes=[c for _, _, c in pool],
        class_names={c["id"]: c["name"] for c in classes},
        domains=domains,
        license=(root / "LICENSE.md").read_text() if (root / "LICENSE.md").exists() else "",
    )
