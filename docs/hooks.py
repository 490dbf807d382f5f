"""MkDocs hook: the plots the pages show live in ``benchmarks/results/`` (written there, with
provenance, by the benchmarks); publish them under ``results/`` instead of copying them into docs/."""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
SHOWN = (".png",)


def on_files(files, config):
    for path in sorted(RESULTS.rglob("*")):
        if path.is_file() and path.suffix in SHOWN:
            uri = "results/" + path.relative_to(RESULTS).as_posix()
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files
