"""Who wrote a result: the command, the code's git commit, the date, and the CPU kernels it ran on.

Recorded in every report the toolkit writes (``export_report.json``, ``bench.json``, the
quantisation report) and in every file under ``benchmarks/results/``, so that a figure can be
traced to the code and the command that produced it. Figures of tiny models move with the CPU's
kernels (AVX-512 or AVX2: ``ATEN_CPU_CAPABILITY``) and with the thread count (the order of
oneDNN's sums), so those are recorded too.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

_ROOT = Path(__file__).resolve().parents[2]  # the checkout, when the package runs from one
_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_kernels() -> str:
    """The vector kernels ATen dispatches to here (``AVX512``, ``AVX2``, ``DEFAULT``, ...)."""
    try:
        import torch

        return torch.backends.cpu.get_cpu_capability()
    except Exception:  # no torch, or an old one: not knowing is not an error
        return "unknown"


def cpu_threads() -> int | None:
    """The threads PyTorch computes with: training on 1 or 2 threads ends at other weights."""
    try:
        import torch

        return torch.get_num_threads()
    except Exception:
        return None


def git_commit(where: Path = _ROOT) -> Dict[str, object]:
    """The checkout's HEAD commit and whether its code (the package and the benchmark scripts, not
    the results) had uncommitted changes; empty when the package is not run from its own checkout
    (an installed wheel)."""
    def git(*args: str) -> Optional[str]:
        try:
            out = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if not top or Path(top).resolve() != where.resolve():  # site-packages inside some other repository
        return {}
    changed = git("status", "--porcelain", "--", "mobile_distill", "benchmarks", ":(exclude)benchmarks/results",
                  ":(exclude)benchmarks/RESULTS.md")
    return {"commit": git("rev-parse", "HEAD"), "uncommitted_changes": bool(changed)}


def _portable(arg: str) -> str:
    """An absolute path as it reads on another machine: relative inside the checkout, ``~`` for the
    home directory (results are committed, and one machine's paths mean nothing on the next)."""
    key, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
    if not value.startswith("/"):
        return arg
    path = Path(value)
    if path.is_relative_to(_ROOT):
        value = str(path.relative_to(_ROOT))
    elif path.is_relative_to(Path.home()):
        value = str(Path("~") / path.relative_to(Path.home()))
    return f"{key}{eq}{value}"


def _command_line() -> str:
    """``mdistill export ...`` or ``python benchmarks/x.py ...``, as a user would type it again."""
    first = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] not in ("", "-c") else None
    if first is None:
        program = ["python", "-c", "..."]
    elif first.parent == _ROOT / "mobile_distill" or first.name == "mdistill":
        program = ["mdistill"]
    elif _ROOT in first.parents:
        program = ["python", str(first.relative_to(_ROOT))]
    else:
        program = [first.name]
    return shlex.join([*program, *map(_portable, sys.argv[1:])])


def provenance(command: Optional[str] = None) -> Dict[str, object]:
    """What to record beside a result. ``command`` defaults to this process's command line."""
    return {
        "command": command or _command_line(),
        **git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_kernels": cpu_kernels(),
        "threads": cpu_threads(),
        "env": {k: os.environ[k] for k in _ENV if k in os.environ},
        "python": platform.python_version(),
    }
