"""Where downloaded data and weights live: ``$MDISTILL_HOME`` or ``~/.cache/mobile_distill``."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The cache folder.

    Raises:
        ConfigError: ``MDISTILL_HOME`` (or a folder above it) is a file.
    """
    root = os.environ.get("MDISTILL_HOME")
    if not root:
        return Path.home() / ".cache" / "mobile_distill"
    path = Path(root).expanduser()
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():
            from .errors import ConfigError

            what = "is a file" if p == path else f"is inside {p}, which is a file"
            raise ConfigError(f"MDISTILL_HOME={root} {what}, not a folder: point MDISTILL_HOME at a folder "
                              "(it holds downloaded data and weights), or unset it to use ~/.cache/mobile_distill")
    return path


def data_dir(name: str) -> Path:
    return home() / "data" / name
