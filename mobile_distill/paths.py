"""Where downloaded data and weights live: ``$MDISTILL_HOME`` or ``~/.cache/mobile_distill``."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    root = os.environ.get("MDISTILL_HOME")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "mobile_distill"


def data_dir(name: str) -> Path:
    return home() / "data" / name
