"""Where each results file comes from: its commit, command and CPU, and what changed since.

    .venv/bin/python benchmarks/check_results.py            # a Markdown table; exit 1 if a file lacks provenance

For every JSON under benchmarks/results/: the commit that wrote it (from its ``provenance``
block), that commit's date, the CPU and its kernels where recorded, the command, and how many
commits have changed the package (``mobile_distill/``) since: 0 means the figures come from the
code as it is now. A file written by older code counts as current when
``benchmarks/same_training.py`` compared that commit with the code now and found the same figures
(``benchmarks/results/same_training/*.json``, written at a commit after which the package has not
changed). ``tests/test_results_provenance.py`` checks the same provenance in the suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _git(*args: str) -> str:
    out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else ""


def same_as_now() -> dict:
    """Results file -> the same_training check that found its commit's figures unchanged, where the
    package has not changed since that check."""
    found = {}
    for path in sorted((RESULTS / "same_training").glob("*.json")):
        check = json.loads(path.read_text())
        commit = check.get("provenance", {}).get("commit", "")
        fresh = commit and _git("rev-list", "--count", f"{commit}..HEAD", "--", "mobile_distill") == "0"
        if check.get("same") and fresh:
            for covered in [check["results_file"], *check.get("also_covers", [])]:
                found.setdefault(covered, []).append(str(path.relative_to(RESULTS)))
    return found


def rows():
    checked = same_as_now()
    for path in sorted(RESULTS.rglob("*.json")):
        prov = json.loads(path.read_text()).get("provenance") or {}
        commit = prov.get("commit", "")
        since = _git("rev-list", "--count", f"{commit}..HEAD", "--", "mobile_distill") if commit else ""
        rel = str(path.relative_to(RESULTS))
        yield {"file": rel, "commit": commit[:9] or "MISSING",
               "date": _git("show", "-s", "--format=%cs", commit) if commit else "",
               "cpu": " ".join(x for x in (prov.get("cpu", ""), prov.get("cpu_kernels", "")) if x) or "not recorded",
               "package_commits_since": since, "command": prov.get("command", "MISSING"),
               "current": "yes" if since == "0" else ("same figures: " + ", ".join(checked[rel]) if rel in checked else "not compared")}


def main() -> int:
    table = list(rows())
    print("| file | commit | date | CPU (kernels) | package commits since | figures at the current code | command |")
    print("|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| `{r['file']}` | {r['commit']} | {r['date']} | {r['cpu']} | {r['package_commits_since']} | "
              f"{r['current']} | `{r['command']}` |")
    return 1 if any(r["commit"] == "MISSING" or r["command"] == "MISSING" for r in table) else 0


if __name__ == "__main__":
    sys.exit(main())
