"""``model.json``: the export folder's list of the files it holds, true at every instant.

An export can be killed between any two steps, folders are exported into again (another format,
another precision), and several exports may write into one folder at once. So every change to the
folder's model files happens under an exclusive lock (``fcntl.flock`` on ``.model.json.lock``)
and starts from ``model.json`` as it is on disk, never from a view held since the export began:
a passed file is described *before* it is renamed to its final name (a kill in between leaves an
entry without a file, dropped by the next export), a failed one is removed before its entry is.
A file of ours that ``model.json`` does not describe (left by a killed export, or another
checkpoint's) is removed when the next export into the folder starts, and so are the staging
files of exports that are no longer running. "Ours" means the file carries mobile_distill
metadata; other files in the folder are never touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from pathlib import Path
from typing import Callable, Dict, Iterator, List

from ..utils.io import pid_alive, remove_path as _remove, write_json_atomic
from .metadata import read_metadata

MODEL_SUFFIXES = (".onnx", ".tflite", ".mlpackage", ".pte")
_STAGING = ".partial"


def staging_path(final: Path) -> Path:
    """A hidden path beside ``final`` that no other process uses: ``.NAME.PID-RANDOM.partial.SUFFIX``
    (the suffix stays last: coremltools wants a package named ``*.mlpackage``)."""
    return final.with_name(f".{final.stem}.{os.getpid()}-{secrets.token_hex(4)}{_STAGING}{final.suffix}")


class Manifest:
    def __init__(self, out_dir: Path, card: Dict, log: Callable[[str], None] = lambda _: None):
        self.dir = Path(out_dir)
        self.path = self.dir / "model.json"
        self.card = card
        self.log = log
        with self._locked():
            artifacts = self._on_disk()
            self._remove_strays(artifacts)
            self._write(artifacts)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.dir / ".model.json.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when the process dies
            yield

    def _on_disk(self) -> Dict[str, Dict]:
        """The artifacts ``model.json`` lists for this checkpoint whose files are there."""
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        same_model = doc.get("model", {}).get("source_checkpoint", {}).get("sha256") == \
            self.card["source_checkpoint"]["sha256"]
        return {a["file"]: a for a in doc.get("artifacts", []) if same_model and (self.dir / a["file"]).exists()}

    def _remove_strays(self, artifacts: Dict[str, Dict]) -> None:
        for path in sorted(self.dir.iterdir()):
            if path.suffix not in MODEL_SUFFIXES:
                continue
            if path.name.startswith("."):
                if _STAGING in path.name and not _writer_alive(path):
                    _remove(path)  # a killed export's staging file
            elif path.name not in artifacts and _is_ours(path):
                self.log(f"removing {path.name}: model.json does not describe it (an interrupted export, or "
                         "another checkpoint's)")
                _remove(path)

    def _write(self, artifacts: Dict[str, Dict]) -> None:
        write_json_atomic(self.path, {"model": self.card, "artifacts": list(artifacts.values())})

    def publish(self, artifact: Dict, staging: Path) -> Path:
        """Describe ``artifact`` in model.json, then move its staged file to its final name."""
        final = self.dir / artifact["file"]
        with self._locked():
            artifacts = self._on_disk()
            artifacts.pop(artifact["file"], None)
            _remove(final)
            artifacts[artifact["file"]] = artifact
            self._write(artifacts)
            os.replace(staging, final)
        return final

    def drop(self, file: str) -> None:
        """Remove the file of that name (its row failed this time: an older file would pass for
        it), then its entry."""
        with self._locked():
            artifacts = self._on_disk()
            _remove(self.dir / file)
            artifacts.pop(file, None)
            self._write(artifacts)

    def listed(self) -> List[Dict]:
        with self._locked():
            return list(self._on_disk().values())


def _writer_alive(staging: Path) -> bool:
    pid = staging.name[1:].split(".")[-3].split("-")[0] if staging.name.count(".") >= 3 else ""
    return pid.isdigit() and pid_alive(int(pid))


def _is_ours(path: Path) -> bool:
    try:
        return read_metadata(path) is not None
    except Exception:  # unreadable or foreign: not ours to delete
        return False
