"""Download, verify and unpack data set archives without ever leaving half a file behind.

A download streams into a temp file beside its destination and is renamed into place only after
its length and checksum check out; an extraction goes into a temp folder beside its destination
and is renamed into place only when every member came out. Archives are scanned before anything
is written, so a path-traversal member refuses the whole archive rather than half of it.
"""

from __future__ import annotations

import gzip
import http.client
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Optional

from ..errors import ConfigError, DataError, DownloadError
from ..utils.io import atomic_path, file_digest
from ..utils.progress import bars_off

_CHUNK = 1 << 20
_HINT = "check your connection or download it by hand and pass --archive"
_FILTER_ERROR = getattr(tarfile, "FilterError", ())
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
# Errors a damaged compressed stream raises at any point while it is read.
_CORRUPT = (tarfile.ReadError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError, zipfile.BadZipFile)


def verify_checksum(path: str | os.PathLike, expected: str, algorithm: str = "sha256", *, label: str = "") -> None:
    """Check a file's digest.

    Args:
        path: the file to hash.
        expected: the hex digest it must have (case and surrounding spaces are ignored).
        algorithm: any ``hashlib`` name (``md5``, ``sha256``, ...).
        label: the name to use in messages instead of ``path`` (e.g. a URL while the file is a temp file).

    Raises:
        DownloadError: the digest differs; the message names the file, the expected and the actual digest.
        ConfigError: ``algorithm`` is not a hash ``hashlib`` knows.
    """
    try:
        actual = file_digest(path, algorithm)
    except ValueError:
        raise ConfigError(f"unknown checksum algorithm {algorithm!r}; use md5 or sha256") from None
    if actual.lower() != expected.strip().lower():
        raise DownloadError(
            f"checksum mismatch for {label or path}: expected {algorithm} {expected.strip().lower()}, "
            f"got {actual}; the file is corrupt, incomplete or not the official one: download it again"
        )


def download_file(
    url: str,
    dest: str | os.PathLike,
    checksum: Optional[str] = None,
    algorithm: str = "sha256",
    progress: bool = True,
    timeout: float = 60,
) -> Path:
    """Download ``url`` to ``dest``, all or nothing.

    Args:
        url: an ``http(s)://``, ``ftp://`` or ``file://`` URL.
        dest: the final file path; its folder is created if needed.
        checksum: the expected hex digest, or None to skip the check.
        algorithm: the hash ``checksum`` is written in.
        progress: show a tqdm bar.
        timeout: seconds to wait for the server on connect and on each read.

    Returns:
        ``dest``.

    Raises:
        DownloadError: HTTP error, unreachable host, timeout, a connection that ended before
            ``Content-Length`` bytes arrived, or a checksum mismatch. Nothing is left at ``dest``
            and no temp file remains.
    """
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        _fetch(url, tmp, dest.name, progress, timeout)
        if checksum:
            # Before the rename: a file with the wrong digest must never appear at ``dest``.
            verify_checksum(tmp, checksum, algorithm, label=f"{dest.name} from {url}")
    return dest


def _fetch(url: str, tmp: Path, name: str, progress: bool, timeout: float) -> None:
    from tqdm import tqdm

    def fail(what: str) -> DownloadError:
        return DownloadError(f"download of {url} failed: {what}; {_HINT}")

    received = 0
    try:
        # Some hosts refuse urllib's default agent string.
        request = urllib.request.Request(url, headers={"User-Agent": "mobile_distill"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            with open(tmp, "wb") as out, tqdm(
                total=expected, unit="B", unit_scale=True, unit_divisor=1024,
                desc=name, disable=bars_off(progress), leave=False,
            ) as bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    _write(out, chunk, tmp)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        raise fail(f"HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        if "unknown url type" in str(e.reason):
            raise DownloadError(f"cannot download {url!r}: {e.reason}; pass a full http(s):// URL") from None
        raise fail(f"cannot reach the server ({e.reason})") from None
    except http.client.IncompleteRead as e:
        raise fail(f"the connection closed early ({received + len(e.partial)} bytes received)") from None
    except (http.client.HTTPException, ConnectionError, TimeoutError) as e:
        raise fail(f"{type(e).__name__}: {e}".rstrip(": ")) from None
    except ValueError as e:  # urllib's answer to a URL without a scheme
        raise DownloadError(f"cannot download {url!r}: {e}; pass a full http(s):// URL") from None
    except OSError as e:  # socket-level errors that are neither of the above
        raise fail(str(e)) from None
    # A server that closes the socket mid-body makes read() return b"" instead of raising.
    if expected is not None and received != expected:
        raise fail(f"the connection closed after {received} of {expected} bytes (interrupted download)")


def _write(out, chunk: bytes, tmp: Path) -> None:
    # Disk errors are not network errors: say so, or the hint would send users to their router.
    try:
        out.write(chunk)
    except OSError as e:
        raise DataError(f"cannot write to {tmp.parent}: {e}; free some space or choose another folder") from None


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Unpack a ``.tar``, ``.tar.gz``/``.tgz`` (also bz2/xz) or ``.zip`` archive into ``dest``.

    Every member is checked first; absolute paths, ``..`` components, links pointing outside
    ``dest`` and device files refuse the whole archive. Tars are then extracted with
    ``filter='data'``, which also resolves link chains that a name check alone cannot see.
    Extraction goes to a temp folder beside ``dest`` that is renamed into place on success.

    Args:
        archive: the archive file.
        dest: a folder that must not exist yet (or be empty); created with the archive's contents.

    Returns:
        ``dest``.

    Raises:
        DataError: the archive is missing, of an unknown type, corrupt or truncated, holds an unsafe
            member, or ``dest`` already holds files. Nothing is left at ``dest`` on failure.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise DataError(f"archive not found: {archive}")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DataError(
            f"cannot extract {archive.name} into {dest}: it already exists; delete it or choose another folder"
        )
    kind = _archive_kind(archive)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".extracting", dir=dest.parent))
    try:
        try:
            if kind == "zip":
                _extract_zip(archive, tmp)
            else:
                _extract_tar(archive, tmp)
        except _CORRUPT as e:
            raise DataError(
                f"cannot extract {archive}: the archive is corrupt or truncated ({e}); download it again"
            ) from None
        if dest.exists():
            dest.rmdir()  # empty, checked above
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _archive_kind(archive: Path) -> str:
    name = archive.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(_TAR_SUFFIXES):
        return "tar"
    # An unknown suffix (e.g. a renamed download): trust the content.
    if zipfile.is_zipfile(archive):
        return "zip"
    try:
        if tarfile.is_tarfile(archive):
            return "tar"
    except _CORRUPT:
        pass
    raise DataError(f"cannot extract {archive}: not a .tar, .tar.gz, .tgz or .zip archive")


def _extract_tar(archive: Path, out: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()  # reads the whole stream: truncation shows up here
        for m in members:
            problem = _path_problem(m.name)
            if problem is None and (m.issym() or m.islnk()):
                problem = _link_problem(m.name, m.linkname, hard=m.islnk())
            if problem is None and (m.isdev() or not (m.isfile() or m.isdir() or m.issym() or m.islnk())):
                problem = "is a device file or other special file"
            if problem:
                _refuse(archive, m.name, problem)
        # The 'data' filter (3.11.4+) also follows link chains, which a name check cannot;
        # before 3.11.4 the checks above still refuse every direct escape.
        kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        try:
            tar.extractall(out, members=members, **kwargs)
        except _FILTER_ERROR as e:
            _refuse(archive, e.tarinfo.name, f"is refused by tarfile's data filter ({e})")


def _extract_zip(archive: Path, out: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            problem = _path_problem(info.filename)
            mode = info.external_attr >> 16
            if problem is None and stat.S_ISLNK(mode):
                problem = _link_problem(info.filename, zf.read(info).decode("utf-8", "replace"), hard=False)
            special = stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
            if problem is None and special:
                problem = "is a device file or other special file"
            if problem:
                _refuse(archive, info.filename, problem)
        zf.extractall(out)  # raises BadZipFile on a CRC mismatch


def _path_problem(name: str) -> Optional[str]:
    if not name:
        return "has an empty name"
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute() or PureWindowsPath(name).drive:
        return "has an absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "contains a '..' component"
    return None


def _link_problem(name: str, target: str, hard: bool) -> Optional[str]:
    kind = "hard link" if hard else "symlink"
    if not target or target.startswith(("/", "\\")) or PureWindowsPath(target).drive:
        return f"is a {kind} to an absolute path ({target!r})"
    # A symlink target is relative to the link's folder, a hard link's to the archive root.
    base = "" if hard else posixpath.dirname(name)
    resolved = posixpath.normpath(posixpath.join(base, target))
    if resolved == ".." or resolved.startswith("../"):
        return f"is a {kind} pointing outside the destination ({target!r})"
    return None


def _refuse(archive: Path, member: str, problem: str) -> None:
    raise DataError(
        f"refusing to extract {archive}: member {member!r} {problem}; "
        "the archive is unsafe: get it again from the official source"
    )

