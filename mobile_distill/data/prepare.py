"""Turn an official data set archive (downloaded or given) into a ready-to-load folder.

Flow: find or download the official file(s) -> verify the md5 -> unpack safely into a temp folder
beside ``dest`` -> check the builder loads it -> rename onto ``dest``. A failure at any step leaves
``dest`` untouched and removes the temp folder.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

from .. import paths
from ..errors import ConfigError, DataError, RegistryError
from . import DATASETS
from .archive import download_file, safe_extract, verify_checksum


@dataclass(frozen=True)
class SourceFile:
    """One official file of a data set.

    Attributes:
        name: the official file name.
        md5: its official md5, or None where no published value could be confirmed.
        url: where it was published.
        unpack: an archive to extract (else copied as is into the data set folder).
    """

    name: str
    md5: Optional[str]
    url: str
    unpack: bool = True


# md5 values: CUB as published with the data set; Cars and SOP as used by the RKD reference code
# (lenscloth/RKD dataset/cars196.py, dataset/stanford.py) and several other public loaders that
# agree on them. The Stanford Cars and SOP hosts below have been offline at times: then download
# the files by hand (mirrors exist) and pass --archive; the md5 check still applies.
SOURCES: Dict[str, Tuple[SourceFile, ...]] = {
    "cub": (
        SourceFile(
            "CUB_200_2011.tgz",
            "97eceeb196236b17998738112f37df78",
            "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",
        ),
    ),
    "cars": (
        SourceFile(
            "car_ims.tgz",
            "d5c8f0aa497503f355e17dc7886c3f14",
            "http://ai.stanford.edu/~jkrause/car196/car_ims.tgz",
        ),
        SourceFile(
            "cars_annos.mat",
            "b407c6086d669747186bd1d764ff9dbc",
            "http://ai.stanford.edu/~jkrause/car196/cars_annos.mat",
            unpack=False,
        ),
    ),
    "sop": (
        SourceFile(
            "Stanford_Online_Products.zip",
            "7f73d41a2f44250d4779881525aea32e",
            "http://ftp.cs.stanford.edu/cs/cvgl/Stanford_Online_Products.zip",
        ),
    ),
}

PathLike = Union[str, os.PathLike]


def prepare(
    name: str,
    archive: Union[PathLike, Sequence[PathLike], None] = None,
    download: bool = False,
    url: Optional[str] = None,
    dest: Optional[PathLike] = None,
    progress: bool = True,
    checksum: Union[str, Mapping[str, str], None] = None,
) -> Path:
    """Prepare ``cub``, ``cars`` or ``sop`` from its official archive(s).

    Args:
        name: the data set.
        archive: the official file(s) already on disk: one path, several paths, or a folder that
            holds them (Cars needs ``car_ims.tgz`` and ``cars_annos.mat``).
        download: fetch the file(s) instead; exactly one of ``archive`` and ``download`` is needed.
        url: a mirror to download from: the file's URL for one-file data sets, the folder URL that
            holds every file for Cars.
        dest: the folder to create; default ``paths.data_dir(name)``. It must not hold files yet.
        progress: show download progress bars.
        checksum: an md5 that replaces the official one (a mapping file name -> md5 for Cars).

    Returns:
        ``dest``, which ``create_dataset(name)`` (or ``NAME:DEST``) now loads.

    Raises:
        RegistryError: an unknown data set name.
        ConfigError: neither or both of ``archive`` and ``download``, or a bad ``checksum``.
        DownloadError: a failed download or an md5 mismatch.
        DataError: missing or unsafe archives, an existing ``dest``, or an archive that does not
            unpack into the expected layout.
    """
    if name not in SOURCES:
        raise RegistryError(f"cannot prepare data set {name!r}; prepare knows: {', '.join(sorted(SOURCES))}")
    files = SOURCES[name]
    if download == (archive is not None):
        raise ConfigError(
            f"prepare {name}: pass either --archive PATH (the official file) or --download, not both or neither"
        )
    expected = _expected_md5(name, files, checksum)
    dest = Path(dest).expanduser() if dest is not None else paths.data_dir(name)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DataError(f"{dest} already exists; delete it to prepare {name} again, or choose another destination")

    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".preparing", dir=dest.parent))
    try:
        if download:
            local = {
                f.name: download_file(
                    _url(f, files, url), work / "downloads" / f.name, expected[f.name], "md5", progress
                )
                for f in files
            }
        else:
            local = _match_archives(name, files, archive)
            for f in files:
                if expected[f.name]:
                    verify_checksum(local[f.name], expected[f.name], "md5")
        tree = work / "tree"
        # Every data set here ships exactly one archive; the other files are copied beside it.
        (to_unpack,) = [f for f in files if f.unpack]
        safe_extract(local[to_unpack.name], tree)
        for f in files:
            if not f.unpack:
                shutil.copy2(local[f.name], tree / f.name)
        _check_loads(name, tree, local[to_unpack.name])
        if dest.exists():
            dest.rmdir()  # empty, checked above
        os.replace(tree, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def _expected_md5(name: str, files: Tuple[SourceFile, ...], checksum) -> Dict[str, Optional[str]]:
    expected = {f.name: f.md5 for f in files}
    if checksum is None:
        return expected
    if isinstance(checksum, str):
        if len(files) != 1:
            raise ConfigError(
                f"{name} has {len(files)} files ({', '.join(expected)}); give the checksum per file name"
            )
        return {files[0].name: checksum}
    unknown = set(checksum) - set(expected)
    if unknown:
        raise ConfigError(
            f"checksum given for unknown file(s) {', '.join(sorted(unknown))}; {name} has {', '.join(expected)}"
        )
    return {**expected, **checksum}


def _url(f: SourceFile, files: Tuple[SourceFile, ...], mirror: Optional[str]) -> str:
    if mirror is None:
        return f.url
    return mirror if len(files) == 1 else f"{mirror.rstrip('/')}/{f.name}"


def _match_archives(name: str, files: Tuple[SourceFile, ...], archive) -> Dict[str, Path]:
    """Official file name -> the user's path, matched by name, else by extension."""
    given = [Path(archive)] if isinstance(archive, (str, os.PathLike)) else [Path(a) for a in archive]
    candidates = []
    for p in (p.expanduser() for p in given):
        if p.is_dir():
            candidates += [p / f.name for f in files if (p / f.name).is_file()]
        elif p.is_file():
            candidates.append(p)
        else:
            raise DataError(f"archive not found: {p}")
    matched: Dict[str, Path] = {}
    for f in files:
        same_name = [p for p in candidates if p.name == f.name]
        same_ext = [p for p in candidates if p.suffix.lower() == Path(f.name).suffix.lower()]
        if same_name:
            matched[f.name] = same_name[0]
        elif len(files) == 1 and len(candidates) == 1:
            matched[f.name] = candidates[0]  # a renamed download; the md5 check still applies
        elif len(same_ext) == 1:
            matched[f.name] = same_ext[0]
    missing = [f.name for f in files if f.name not in matched]
    if missing:
        raise DataError(
            f"{name} needs {', '.join(f.name for f in files)}; {', '.join(missing)} not found among "
            f"{', '.join(str(p) for p in given)}: pass --archive once per file, or a folder holding them"
        )
    return matched


def _check_loads(name: str, tree: Path, archive: Path) -> None:
    importlib.import_module(f".{name}", __package__)  # registers only this builder
    try:
        splits = DATASETS.get(name)(tree)
    except DataError as e:
        raise DataError(f"{archive} unpacked, but not into the {name} layout: {e}") from None
    if not splits.train or not splits.test:
        raise DataError(f"{archive} unpacked into an empty {name} data set: {splits.summary()}")
