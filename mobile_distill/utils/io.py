"""Atomic file writing and hashing: nothing half-written ever sits at a final path."""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` only on success.

    The temp file lives in the same directory so that ``os.replace`` is atomic.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    # the writer's pid in the name lets remove_stale_temps tell a dead writer's leftovers from live ones
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.{os.getpid()}-", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp)
    # mkstemp creates 0600; give the final file the usual permissions (0666 minus umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_stale_temps(final: str | os.PathLike) -> list:
    """Delete the temporary files of ``atomic_path(final)`` whose writer process is gone (a SIGKILL
    skips the cleanup, and a teacher cache's leftovers are hundreds of MB); a live writer's stay."""
    final = Path(final)
    removed = []
    for tmp in final.parent.glob(f".{glob.escape(final.name)}.*-*.tmp"):
        pid = tmp.name[len(final.name) + 2:].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def path_digest(path: str | os.PathLike) -> str:
    """sha256 of a file, or over a package directory (CoreML ``.mlpackage``): relative names and
    contents, sorted."""
    path = Path(path)
    if path.is_file():
        return file_digest(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(path)).encode())
        h.update(file_digest(p).encode())
    return h.hexdigest()


def remove_path(path: str | os.PathLike) -> None:
    """Delete a file, a link or a directory tree; nothing there is fine."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# Errors of the machine a user runs on, not of this program: reported as one line, never a traceback.
STORAGE_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                  errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                  errno.EPERM: "operation not permitted", errno.ENOTDIR: "a part of the path is a file, not a folder"}


def storage_error(e: OSError, path: str | os.PathLike | None = None):
    """A one-line ``StorageError`` for an ``OSError`` of the machine (full disk, read-only or
    forbidden folder), naming the path; ``None`` for any other error."""
    from ..errors import StorageError

    if not isinstance(e, OSError) or e.errno not in STORAGE_ERRNOS:
        return None
    where = e.filename or path or "a file"
    hint = {errno.ENOSPC: "free some space or write elsewhere", errno.EDQUOT: "free some space or write elsewhere",
            errno.ENOTDIR: "check the path"}.get(e.errno, "choose a folder you can write to")
    return StorageError(f"cannot write {where}: {STORAGE_ERRNOS[e.errno]}"
                        + (f" ({free_mb(where):,.1f} MB free there)" if e.errno in (errno.ENOSPC, errno.EDQUOT) and
                                 (e.filename or path) else "")
                        + f"; {hint}")


def free_mb(path: str | os.PathLike) -> float:
    """Free space (MB) on the file system that holds ``path`` (or its nearest existing parent)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free / 1e6
