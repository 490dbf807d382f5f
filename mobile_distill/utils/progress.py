"""Progress bars only where someone watches them."""

from __future__ import annotations

from typing import Optional


def bars_off(progress: bool) -> Optional[bool]:
    """tqdm's ``disable``: ``None`` draws only on a terminal. Off a terminal (CI, ``make demo > log``)
    tqdm would write every frame (a 13-minute demo wrote 493 KB of them); the one line per epoch
    that training prints carries the progress there, as in Ultralytics and Lightning."""
    return None if progress else True
