"""Every results file names the commit and the command that wrote it: the JSON files under
benchmarks/results/ carry a ``provenance`` block, the Markdown tables and plots are listed as
outputs of one of them, and every results path the README and the docs pages quote exists and is covered."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def _provenance(path: Path) -> dict:
    doc = json.loads(path.read_text())
    return doc.get("provenance") or {}


def _covered(path: Path, results: Path = RESULTS) -> bool:
    """A non-JSON result (a table, a plot) is covered by the JSON of its stem, or by a JSON beside
    it that lists it among its outputs."""
    if path.suffix == ".json":
        return bool(_provenance(path))
    if path.with_suffix(".json").is_file() and _provenance(path.with_suffix(".json")):
        return True
    for other in list(path.parent.glob("*.json")) + list(results.glob("*.json")):
        base = other.parent
        if any((base / out).resolve() == path.resolve() for out in _provenance(other).get("outputs", [])):
            return True
    return False


@pytest.mark.parametrize("path", sorted(RESULTS.rglob("*.json")), ids=lambda p: str(p.relative_to(RESULTS)))
def test_every_results_file_names_its_commit_and_command(path):
    prov = _provenance(path)
    assert prov, f"{path.relative_to(REPO)} has no provenance block"
    assert re.fullmatch(r"[0-9a-f]{40}", prov.get("commit", "")), (path.name, prov.get("commit"))
    assert prov.get("command", "").strip(), path.name
    assert not prov.get("uncommitted_changes"), f"{path.name} was written by code with uncommitted changes"
    if (REPO / ".git").exists():  # CI clones the whole history: the commit must be in it
        known = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", prov["commit"] + "^{commit}"],
                               capture_output=True)
        assert known.returncode == 0, f"{path.name} names commit {prov['commit']}, which this repository lacks"


def _quoted_paths(text: str):
    """Results paths in the README: plain, with a glob (``train_throughput*.json``) or a brace
    list (``{results.json, bench/}``)."""
    for raw in re.findall(r"benchmarks/(?:results/[^\s`)\]]*(?:\{[^}]*\})?|RESULTS\.md)", text):
        if "{" in raw:
            head, options = raw.split("{", 1)
            yield from (head + option.strip() for option in options.rstrip("}").split(","))
        else:
            yield raw.rstrip(".,;:")


def _in_history(rel: str, readme: str) -> bool:
    """A results path the README names as removed: every mention says it is in the git history,
    and the history does hold it."""
    mentions = [m.start() for m in re.finditer(re.escape(rel), readme)]
    said = all("git history" in readme[i - 200:i + len(rel) + 200] for i in mentions)
    logged = subprocess.run(["git", "-C", str(REPO), "log", "--oneline", "-1", "--", rel.rstrip("/")],
                            capture_output=True, text=True).stdout.strip()
    return said and bool(logged)


def test_the_readme_and_docs_quote_only_results_that_name_their_commit():
    readme = "\n".join(p.read_text() for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])
    quoted = sorted(set(_quoted_paths(readme)))
    assert len(quoted) > 5  # the pattern still finds the README's references
    uncovered = []
    for rel in quoted:
        if not (REPO / rel.rstrip("/")).exists() and (REPO / ".git").exists() and _in_history(rel, readme):
            continue  # a file the README points to in the history, not a current figure
        matches = sorted(REPO.glob(rel.rstrip("/"))) if "*" in rel else [REPO / rel.rstrip("/")]
        assert matches and all(m.exists() for m in matches), f"the README quotes {rel}, which does not exist"
        for match in matches:
            files = [p for p in match.rglob("*") if p.is_file()] if match.is_dir() else [match]
            uncovered += [str(f.relative_to(REPO)) for f in files if not _covered(f)]
    assert not uncovered, f"quoted results without a commit and command: {uncovered}"


def test_the_check_can_fail(tmp_path):
    """A table listed as an output is covered; a plot nobody lists, or a JSON without provenance, is not."""
    (tmp_path / "table.json").write_text(json.dumps({"provenance": {"commit": "0" * 40, "command": "x",
                                                                    "outputs": ["table.md"]}}))
    (tmp_path / "bare.json").write_text(json.dumps({"figure": 1}))
    for name in ("table.md", "stray.png"):
        (tmp_path / name).write_text("")
    assert _covered(tmp_path / "table.md", tmp_path) and _covered(tmp_path / "table.json", tmp_path)
    assert not _covered(tmp_path / "stray.png", tmp_path) and not _covered(tmp_path / "bare.json", tmp_path)


@pytest.mark.parametrize("path", sorted((RESULTS / "same_training").glob("*.json")), ids=lambda p: p.name)
def test_each_same_training_check_compared_its_results_file_commit_and_found_it_equal(path):
    """benchmarks/same_training.py stands in for a rerun only if it compared the commit the results
    file names (not another one), and found everything equal."""
    check = json.loads(path.read_text())
    for name in [check["results_file"], *check.get("also_covers", [])]:
        results = RESULTS / name
        assert results.is_file(), f"{path.name} checks {name}, which does not exist"
        assert check["base"] == _provenance(results)["commit"], f"{path.name} compared another commit than {name}'s"
    assert check["same"] is True and check["runs"], f"{path.name}: the current code computes something else"
    flags = [v for run in check["runs"].values() for k, v in run.items() if k.endswith("_equal")]
    assert flags and all(f is not False for f in flags), path.name


def test_same_training_groups_table_rows_by_code_path_and_matches_caches_by_role(tmp_path):
    """Rows that differ only in seed, schedule or a loss weight take one code path and are run once;
    a cache file is matched by its role, not by the key tag that hashes each tree's teacher file."""
    import numpy as np

    from conftest import load_benchmark

    same = load_benchmark("same_training")
    base = {"model": "m", "distill": ["hint:1"], "seed": 0, "epochs": 10, "name": "a", "out_dir": "x"}
    runs = [{"block": "b", "row": "hint:1", "config": base},
            {"block": "b", "row": "hint:3, seed 1", "config": {**base, "distill": ["hint:3"], "seed": 1, "epochs": 160}},
            {"block": "b", "row": "rkd:1", "config": {**base, "distill": ["rkd:1"]}},
            {"block": "b", "row": "hint:1 lr", "config": {**base, "lr": 0.1}}]
    (tmp_path / "table.json").write_text(json.dumps({"runs": runs}))
    assert list(same.table_rows(tmp_path / "table.json")) == ["b: hint:1", "b: rkd:1", "b: hint:1 lr"]
    a, b = tmp_path / "a", tmp_path / "b"
    for d, tag in ((a, "0123456789ab"), (b, "ba9876543210")):
        d.mkdir()
        np.save(d / f"teacher_views-{tag}.npy", np.ones((3, 2)))
        np.save(d / f"teacher_views-{tag}-stage3.npy", np.zeros((3, 4)))
    files = lambda d: sorted(d.glob("*.npy"))  # noqa: E731
    assert same.same_arrays(files(a), files(b)) is True
    np.save(b / "teacher_views-ba9876543210-stage3.npy", np.full((3, 4), 1e-7))
    assert same.same_arrays(files(a), files(b)) is False
    assert same.same_arrays([], []) is None


_MACHINE_PATH = re.compile(r"""(?:^|[\s"'=(])(/(?:work|tmp|home|root|Users|mnt|var|opt|srv|data)/[^\s"')]*)""")


def _machine_paths(text: str) -> list:
    return _MACHINE_PATH.findall(text)


def test_no_results_file_or_docs_page_names_a_path_of_the_machine_that_wrote_it():
    """A command in a results file is one to type again on another machine: a scratch path of the
    machine it ran on (``--out /home/alice/scratch/x.json``) is noise there, and tells who ran it where."""
    files = [p for p in RESULTS.rglob("*") if p.suffix in (".json", ".md", ".csv")]
    files += [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    found = {str(p.relative_to(REPO)): _machine_paths(p.read_text()) for p in files}
    assert not {k: v for k, v in found.items() if v}, found


def test_the_machine_path_check_can_fail_and_provenance_writes_portable_commands(monkeypatch):
    from mobile_distill.utils import provenance as prov

    assert _machine_paths('"command": "python benchmarks/frontier.py --out /home/alice/scratch/f.json"') == ["/home/alice/scratch/f.json"]
    assert not _machine_paths("mdistill export runs/x/last.pt --out-dir exports/x, 1.0 ms/image")
    home = prov.Path.home()
    monkeypatch.setattr(prov.sys, "argv", ["mdistill", "export", str(prov._ROOT / "runs" / "a" / "last.pt"),
                                           f"--out-dir={home / 'exports'}", "--format", "tflite"])
    assert prov.provenance()["command"] == "mdistill export runs/a/last.pt '--out-dir=~/exports' --format tflite"
