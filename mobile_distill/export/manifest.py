"""``model.json``: the export folder's list of the files it holds, true at every instant.

An export can be killed between any two steps, and folders are exported into again (another format,
another precision). So ``model.json`` is rewritten *before* each passed file is renamed to its final
name, lists the files of earlier exports of the same checkpoint that are still there, and
a file of ours that it does not describe (left by a killed export, or from another checkpoint) is
removed when the next export into the folder starts. "Ours" means the file carries mobile_distill
metadata; other files in the folder are never touched.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable, Dict, List

from ..utils.io import write_json_atomic
from .metadata import read_metadata

MODEL_SUFFIXES = (".onnx", ".tflite", ".mlpackage")


class Manifest:
    def __init__(self, out_dir: Path, card: Dict, log: Callable[[str], None] = lambda _: None):
        self.path = Path(out_dir) / "model.json"
        self.card = card
        self.artifacts: Dict[str, Dict] = {}  # file name -> artifact, in the order written
        previous = self._read()
        same_model = previous.get("model", {}).get("source_checkpoint", {}).get("sha256") == \
            card["source_checkpoint"]["sha256"]
        for artifact in previous.get("artifacts", []) if same_model else []:
            if (self.path.parent / artifact["file"]).exists():
                self.artifacts[artifact["file"]] = artifact
        for path in sorted(self.path.parent.iterdir()):
            if path.suffix in MODEL_SUFFIXES and not path.name.startswith(".") and path.name not in self.artifacts \
                    and _is_ours(path):
                log(f"removing {path.name}: model.json does not describe it (an interrupted export, or "
                    "another checkpoint's)")
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        self.write()

    def _read(self) -> Dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def publish(self, artifact: Dict) -> None:
        """Call before the file appears at its final name: a kill after this leaves it described."""
        self.artifacts[artifact["file"]] = artifact
        self.write()

    def drop(self, file: str) -> None:
        """Call after a file of that name was removed (its row failed this time)."""
        if self.artifacts.pop(file, None) is not None:
            self.write()

    def listed(self) -> List[Dict]:
        return list(self.artifacts.values())

    def write(self) -> None:
        write_json_atomic(self.path, {"model": self.card, "artifacts": self.listed()})


def _is_ours(path: Path) -> bool:
    try:
        return read_metadata(path) is not None
    except Exception:  # unreadable or foreign: not ours to delete
        return False
