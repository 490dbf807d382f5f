"""The documentation site: it builds with ``mkdocs build --strict`` (a broken link or anchor fails),
and the blocks its pages mark ``<!-- runnable -->`` run, in order, on a generated folder data set."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_shapes_dataset

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
BIN = Path(sys.executable).parent
RUNNABLE = re.compile(r"^<!-- runnable -->\n```(bash|python)\n(.*?)^```$", re.M | re.S)
# The pages whose runnable blocks the suite executes, and how many each must keep (a marker
# deleted by accident must not turn the check into one that passes by running nothing).
PAGES = {"getting-started.md": 4, "your-own-data.md": 3}


def mkdocs(root: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([str(BIN / "mkdocs"), "build", "--strict", "-d", str(site)], cwd=root,
                          capture_output=True, text=True, env=env, timeout=300)


def runnable_blocks(page: str) -> list:
    return RUNNABLE.findall((DOCS / page).read_text())


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs") / "site"
    done = mkdocs(REPO, out)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_the_site_builds_strictly_with_the_cli_reference_and_the_plots(site):
    cli = (site / "cli" / "index.html").read_text()
    # generated from Click: every top-level command of mdistill is on the page
    from mobile_distill.cli import cli as group
    assert all(f"mdistill {name}" in cli for name in group.commands), sorted(group.commands)
    # the defaults shown are the settings dataclasses' (mkdocs-click's table style printed click's
    # internal UNSET sentinel instead: the page uses click's own help formatting)
    assert "UNSET" not in cli and "[default: 256]" in cli and "[default: 0.9999]" in cli
    api = (site / "api" / "index.html").read_text()
    assert "mobile_distill.export.api.export" in api and "formats" in api  # mkdocstrings rendered signatures
    # the hook published the plots the pages show from benchmarks/results/
    assert (site / "results" / "web_client.png").is_file()


def readme_links(text: str) -> list:
    """Relative links of a Markdown text (not web addresses), as (path, anchor)."""
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    return [tuple((link.split("#", 1) + [""])[:2]) for link in links if not re.match(r"[a-z]+:", link)]


def test_the_readme_links_into_the_docs_resolve(site):
    """GitHub shows the README, not the site: its links to files and to docs sections are checked here
    (a section is an id in the built page)."""
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    links = readme_links(text)
    assert sum(path.startswith("docs/") for path, _ in links) >= 10
    for path, anchor in links:
        assert (REPO / path).exists(), f"README links to {path}, which does not exist"
        if anchor:
            assert path.startswith("docs/") and path.endswith(".md"), (path, anchor)
            page = site / Path(path).relative_to("docs").with_suffix("") / "index.html"
            assert f'id="{anchor}"' in page.read_text(), f"README links to {path}#{anchor}: no such section"


def test_the_readme_link_check_can_fail():
    assert readme_links("[a](docs/x.md#y) [b](https://e.org) [c](docs/z.md)") == [("docs/x.md", "y"), ("docs/z.md", "")]


def test_a_broken_anchor_fails_the_build(tmp_path):
    """The strict build is a check that can fail: the same site with one link to a missing anchor."""
    root = tmp_path / "copy"
    shutil.copytree(DOCS, root / "docs")
    shutil.copy(REPO / "mkdocs.yml", root)
    (root / "benchmarks").symlink_to(REPO / "benchmarks")
    with (root / "docs" / "limits.md").open("a") as f:
        f.write("\nSee [the gate](export.md#no-such-section).\n")
    done = mkdocs(root, tmp_path / "site")
    assert done.returncode != 0
    assert "no-such-section" in done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("page", sorted(PAGES))
def test_the_runnable_blocks_of_the_page_run(page, tmp_path):
    blocks = runnable_blocks(page)
    assert len(blocks) >= PAGES[page], f"{page} lost runnable blocks: {len(blocks)}"
    make_shapes_dataset(tmp_path / "my_images", n_classes=8, per_class=6, test_per_class=4)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    for i, (language, code) in enumerate(blocks):
        command = ["bash", "-euo", "pipefail", "-c", code] if language == "bash" else [sys.executable, "-c", code]
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{page} block {i + 1} ({language}) failed:\n{code}\n{done.stdout}\n{done.stderr}"


def test_the_block_finder_sees_only_marked_blocks():
    text = "```bash\nnot marked\n```\n<!-- runnable -->\n```python\nprint(1)\n```\n"
    assert RUNNABLE.findall(text) == [("python", "print(1)\n")]
