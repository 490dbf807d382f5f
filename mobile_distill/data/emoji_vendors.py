"""Where each emoji vendor's drawings come from, and how they become 64x64 RGBA PNGs.

Three kinds of npm package:
- ``emoji-datasource-<vendor>`` (iamcal): ``img/<vendor>/64/<image>.png``, named as in its
  ``emoji.json`` (which is also the metadata every other vendor is matched against).
- ``openmoji``: ``color/svg/<CODEPOINTS>.svg``, named by the emoji's code points.
- ``fluentui-emoji``: ``icons/<flat|modern|high-contrast>/<cldr-name>[-<skin tone>].svg``,
  named by the emoji's CLDR short name; the names come from OpenMoji's ``data/openmoji.csv``
  (``annotation`` per ``hexcode``), with ``emoji.json``'s ``name`` as a fallback.

SVGs are rasterised with resvg (the ``resvg-py`` wheel, no system library) at the PNG vendors'
size, so that no vendor can be told apart by its resolution.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from ..errors import DataError, MissingDependencyError
from ..utils.progress import bars_off

SIZE = 64  # pixels; the emoji-datasource PNGs are 64x64


@dataclass(frozen=True)
class Vendor:
    """One drawing style: a folder of the data set and a domain tag of the test images."""

    key: str
    package: str  # npm package name
    version: str
    sha256: str  # of the npm tarball
    license: str  # one line for LICENSE.md and the README
    open_license: bool  # False: opt-in only, with a caveat
    kind: str  # datasource | openmoji | fluent
    folder: str = ""  # the package's image folder for this style
    license_file: str = "LICENSE"


_DATASOURCE = "16.0.0"
VENDORS: Dict[str, Vendor] = {v.key: v for v in (
    Vendor("google", "emoji-datasource-google", _DATASOURCE,
           "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438",
           "Noto Emoji by Google, Apache License 2.0 (https://github.com/googlefonts/noto-emoji)",
           True, "datasource", "img/google/64"),
    Vendor("twitter", "emoji-datasource-twitter", _DATASOURCE,
           "f64a530c63bca463bd8317fdc4615ce63a53a0c65018e4ce2d848aaba7a28877",
           "Twemoji by Twitter, Inc. and other contributors, CC-BY 4.0 "
           "(https://creativecommons.org/licenses/by/4.0/)", True, "datasource", "img/twitter/64"),
    Vendor("openmoji", "openmoji", "17.0.0",
           "55ee7d13485dec86e9f38c1f3a645a13382d33ff97c0cd845ee824b0aef45e68",
           "OpenMoji (https://openmoji.org), CC-BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/)",
           True, "openmoji", "color/svg", "LICENSE.txt"),
    Vendor("fluent_color", "fluentui-emoji", "1.3.0",
           "ec892e607e854859b812c7d827801756adc19955b0ef56d4ae8afcddd19492c5",
           "Fluent Emoji by Microsoft (Color style), MIT (https://github.com/microsoft/fluentui-emoji)",
           True, "fluent", "icons/modern"),
    Vendor("fluent_flat", "fluentui-emoji", "1.3.0",
           "ec892e607e854859b812c7d827801756adc19955b0ef56d4ae8afcddd19492c5",
           "Fluent Emoji by Microsoft (Flat style), MIT (https://github.com/microsoft/fluentui-emoji)",
           True, "fluent", "icons/flat"),
    Vendor("fluent_contrast", "fluentui-emoji", "1.3.0",
           "ec892e607e854859b812c7d827801756adc19955b0ef56d4ae8afcddd19492c5",
           "Fluent Emoji by Microsoft (High Contrast style), MIT (https://github.com/microsoft/fluentui-emoji)",
           True, "fluent", "icons/high-contrast"),
    Vendor("apple", "emoji-datasource-apple", _DATASOURCE,
           "b34d1665e136f163b0d4433318df151895b785186e8c729b2211b43017945075",
           "Apple emoji, Copyright (c) Apple Inc.: not openly licensed, not for commercial use",
           False, "datasource", "img/apple/64"),
    Vendor("facebook", "emoji-datasource-facebook", _DATASOURCE,
           "017038cf5a4e7fcf03dd9133cbed43d4c281c4b3ce7b927c7160261b92b8821e",
           "Facebook emoji, (c) Facebook, Inc.: no clear licence", False, "datasource", "img/facebook/64"),
)}
# Openly licensed styles: the default data set. Apple and Facebook are opt-in.
DEFAULT_VENDORS: Tuple[str, ...] = tuple(k for k, v in VENDORS.items() if v.open_license)
# The metadata (emoji.json) every vendor is matched against, and the names the Fluent files use.
METADATA_PACKAGE = "google"
NAMES_PACKAGE = "openmoji"
CAVEAT = ("{names}: not openly licensed artwork (see LICENSE.md); use for private research only, "
          "and don't redistribute the images or models trained on them without checking the terms.")
# Fluent file suffix per single skin-tone modifier of emoji.json's skin_variations.
_FLUENT_TONES = {"1F3FB": "light", "1F3FC": "medium-light", "1F3FD": "medium", "1F3FE": "medium-dark",
                 "1F3FF": "dark"}


def parse_vendors(text: str) -> Tuple[str, ...]:
    """``"google,twitter"`` -> the keys, checked; ``default`` and ``all`` are shorthands.

    Raises:
        DataError: an unknown vendor (the message lists the known ones).
    """
    items = [t.strip().lower() for t in str(text).split(",") if t.strip()]
    out: List[str] = []
    for item in items:
        keys = DEFAULT_VENDORS if item == "default" else tuple(VENDORS) if item == "all" else (item,)
        for k in keys:
            if k not in VENDORS:
                raise DataError(f"unknown emoji vendor {k!r}; known: {', '.join(VENDORS)} (or default, all)")
            if k not in out:
                out.append(k)
    if not out:
        raise DataError("no emoji vendor given; known: " + ", ".join(VENDORS))
    return tuple(out)


def looks_like_vendor_list(text: str) -> bool:
    items = [t.strip().lower() for t in str(text).split(",")]
    return bool(items) and all(t in VENDORS or t in ("default", "all") for t in items)


def images_of(entry: dict) -> Iterator[Tuple[str, dict, Optional[str]]]:
    """(image file name, emoji.json record, skin-tone key or None) of an emoji and its variants."""
    yield entry["image"], entry, None
    for tone, variant in (entry.get("skin_variations") or {}).items():
        yield variant["image"], variant, tone


def install_images(vendor: Vendor, package_root: Path, entries: List[dict], out: Path,
                   names: Optional[Dict[str, str]] = None, progress: bool = False) -> int:
    """Write ``out/<image>.png`` for every emoji (and variant) that ``vendor``'s package draws.

    Args:
        package_root: the unpacked npm package (its ``package/`` folder).
        entries: emoji.json records.
        names: hexcode -> CLDR short name (Fluent only).

    Returns:
        How many images were written.

    Raises:
        DataError: the package lacks the vendor's image folder.
    """
    src = package_root / vendor.folder
    if not src.is_dir():
        raise DataError(f"{vendor.package}@{vendor.version} has no {vendor.folder}/ folder; "
                        f"is it the right package?")
    out.mkdir(parents=True, exist_ok=True)
    finder = {"datasource": _datasource_file, "openmoji": _openmoji_file, "fluent": _fluent_file}[vendor.kind]
    jobs = []
    for entry in entries:
        for image, record, tone in images_of(entry):
            found = finder(src, entry, record, tone, names or {})
            if found is not None:
                jobs.append((found, out / image))
    from tqdm import tqdm

    written = 0
    for found, dest in tqdm(jobs, desc=vendor.key, unit="img", disable=bars_off(progress), leave=False):
        if found.suffix == ".png":
            shutil.copyfile(found, dest)
            written += 1
        elif rasterise(found, dest):
            written += 1
    return written


def _datasource_file(src: Path, entry, record, tone, names) -> Optional[Path]:
    p = src / record["image"]
    return p if p.is_file() else None


def _hex_candidates(record: dict) -> Iterator[str]:
    unified = record["unified"].upper()
    yield unified
    yield unified.replace("-FE0F", "")
    if record.get("non_qualified"):
        yield record["non_qualified"].upper()


def _openmoji_file(src: Path, entry, record, tone, names) -> Optional[Path]:
    for code in _hex_candidates(record):
        p = src / f"{code}.svg"
        if p.is_file():
            return p
    return None


def _fluent_file(src: Path, entry, record, tone, names) -> Optional[Path]:
    if tone is not None and tone not in _FLUENT_TONES:
        return None  # two-tone combinations (couples): Fluent draws only single tones
    for base in fluent_names(entry, names):
        suffixes = [f"-{_FLUENT_TONES[tone]}"] if tone else ["", "-default"]
        for suffix in suffixes:
            p = src / f"{base}{suffix}.svg"
            if p.is_file() and p.stat().st_size > 0:
                return p
    return None


def kebab(text: str) -> str:
    """CLDR name -> Fluent file stem: ``"keycap: 1"`` -> ``keycap-1``, ``"O button"`` -> ``o-button``."""
    text = text.lower().replace("\u2019", "").replace("'", "").replace(".", "").replace("&", "")
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def fluent_names(entry: dict, names: Dict[str, str]) -> List[str]:
    """Candidate Fluent file stems of an emoji: its CLDR name, then emoji.json's name."""
    out = []
    for code in _hex_candidates(entry):
        if code in names:
            out.append(kebab(names[code]))
    out.append(kebab(entry.get("name") or entry.get("short_name") or ""))
    return [n for i, n in enumerate(out) if n and n not in out[:i]]


def cldr_names(openmoji_root: Path) -> Dict[str, str]:
    """hexcode -> CLDR short name, from OpenMoji's ``data/openmoji.csv``."""
    table = openmoji_root / "data" / "openmoji.csv"
    if not table.is_file():
        raise DataError(f"{table} is missing: the Fluent files are matched by OpenMoji's CLDR names")
    with open(table, newline="", encoding="utf-8") as f:
        return {row["hexcode"].upper(): row["annotation"] for row in csv.DictReader(f) if row.get("annotation")}


def rasterise(svg: Path, png: Path, size: int = SIZE) -> bool:
    """SVG -> ``size`` x ``size`` RGBA PNG (transparent background). False for an empty/invalid SVG."""
    try:
        import resvg_py
    except ImportError:
        raise MissingDependencyError("resvg-py is needed to rasterise the SVG emoji: pip install resvg-py") from None
    if svg.stat().st_size == 0:
        return False
    try:
        data = bytes(resvg_py.svg_to_bytes(svg_path=str(svg), width=size, height=size))
    except ValueError:
        return False
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img.convert("RGBA").save(png, "PNG")
    return True


def license_text(vendors: Iterable[str], version_line: str) -> str:
    lines = ["# Emoji images: licences and attribution", "", version_line, ""]
    for key in vendors:
        v = VENDORS[key]
        change = "copied as published (64 px PNG)" if v.kind == "datasource" else "rasterised from SVG to 64 px PNG"
        lines.append(f"- {key}/: {v.license}; from npm {v.package}@{v.version}; the package's own licence "
                     f"file is {key}/{v.license_file}. Changed here only: {change}, composited onto white "
                     f"when loaded.")
    closed = [k for k in vendors if not VENDORS[k].open_license]
    if closed:
        lines += ["", CAVEAT.format(names=", ".join(closed))]
    return "\n".join(lines) + "\n"
