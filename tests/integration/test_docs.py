"""The documentation site (mkdocs.yml, docs/) builds with ``mkdocs build --strict``, offline.

A broken link between pages, a link to a repository file that does not exist, a stale
``::: policyopt.name`` API reference, a CLI command the CLI page leaves out and a README section
that no page includes (the guides are README.md's sections, included at build time) each fail the
build; the tests below break a copy of the docs in each of these ways and check that the build
fails for that reason. Every build runs with sockets refused, so a theme or plugin that fetches
anything fails it too. Four builds: the site, the breakages in two, a network reach.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).parents[2]

# Runs `mkdocs ARGS` with every way out to the network refused and reported on stderr.
GUARDED_MKDOCS = """
import socket, sys

def _refuse(*args, **kwargs):
    sys.stderr.write(f"NETWORK ACCESS during the docs build: {args!r}\\n")
    raise OSError("network access during the docs build")

socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.getaddrinfo = _refuse
socket.create_connection = _refuse

from mkdocs.__main__ import cli
cli(sys.argv[1:], prog_name="mkdocs")
"""


def _build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    config_and_site = ["-f", str(root / "mkdocs.yml"), "-d", str(site)]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    # Bytecode caching on: with PYTHONDONTWRITEBYTECODE every build compiles MkDocs, Material,
    # mkdocstrings and their dependencies again (4.3 s a build instead of 2.4 s here).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return subprocess.run(
        [sys.executable, "-c", GUARDED_MKDOCS, "build", "--strict", *config_and_site],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _warnings(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("WARNING")]


def _copy_of_repo(tmp_path: Path) -> Path:
    """The repository as the docs build sees it, with docs/ and mkdocs.yml copied (to break)
    and everything else linked."""
    copy = tmp_path / "repo"
    copy.mkdir()
    for entry in ROOT.iterdir():
        if entry.name in {"docs", "mkdocs.yml", "site", ".git", ".venv"}:
            continue
        (copy / entry.name).symlink_to(entry)
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copy2(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    return copy


def test_site_builds_strict_and_offline(tmp_path: Path) -> None:
    site = tmp_path / "site"
    done = _build(ROOT, site)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "NETWORK ACCESS" not in output
    assert not _warnings(output), output

    # Every page of the nav was written, the API reference holds the public names, and the CLI
    # page holds every command's --help.
    mkdocs_yml = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav_pages = re.findall(r"^\s*-\s+(?:[^:\n]+:\s+)?([\w/.-]+\.md)\s*$", mkdocs_yml, re.MULTILINE)
    assert len(nav_pages) >= 20, nav_pages
    for page in nav_pages:
        stem = page.removesuffix(".md").removesuffix("index")
        assert (site / stem / "index.html").is_file(), page
    reference = "".join(p.read_text(encoding="utf-8") for p in (site / "reference").rglob("*.html"))
    names = ["Program", "Score", "OptimizationResult", "Candidate", "Optimizer", "GEPA", "MIPRO"]
    names += ["OPRO", "LM", "LocalLM", "RolloutEngine", "events.RunStarted", "events.NewBest"]
    names += ["registry.OptimizerSpec", "registry.register_optimizer"]
    for name in names:
        assert f'id="policyopt.{name}"' in reference, name
    cli_page = (site / "cli/index.html").read_text(encoding="utf-8")
    for command in ["demo", "optimize", "estimate", "show", "bench", "serve", "job submit"]:
        assert f"$ policyopt {command} --help" in cli_page, command
    assert ":class:" not in reference  # Sphinx roles in docstrings render as code

    # Viewing it fetches nothing either: no script, style sheet, font or image from another host.
    for html in site.rglob("*.html"):
        text = html.read_text(encoding="utf-8")
        assert not re.search(r"<(script|img|iframe)[^>]*\ssrc=\"(https?:)?//", text), html
        assert not re.search(r"<link[^>]*\shref=\"(https?:)?//", text), html
    for css in site.rglob("*.css"):
        assert not re.search(r"url\([\"']?(https?:)?//", css.read_text(encoding="utf-8")), css


# name: (page of docs/, text to replace or "" to append, the new text, what the build says)
BREAKAGES: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "link to a missing page": ("quickstart.md", "", "\nSee [the FAQ](faq.md).\n", ("faq.md",)),
    "stale API reference": ("reference/types.md", "", "\n::: policyopt.gone\n", ("gone",)),
    "link to a missing repository file": (
        "own-program.md",
        "",
        "\nThe [example](../examples/no_such_example.py).\n",
        ("../examples/no_such_example.py",),
    ),
    "CLI command left off the CLI page": (
        "cli.md",
        "<!-- policyopt-help: job cancel -->",
        "",
        ("does not show 'policyopt job cancel'",),
    ),
    "README section renamed": (
        "performance.md",
        "<!-- readme: Performance -->",
        "<!-- readme: Perf -->",
        ("README.md has no section 'Perf'", "section 'Performance' is on no page"),
    ),
}


#: breakages built together (strict mode reports every warning, then fails); a stale API
#: reference aborts the build where it is met, so it is built alone
TOGETHER = [["stale API reference"], [b for b in BREAKAGES if b != "stale API reference"]]


@pytest.mark.parametrize("breakages", TOGETHER, ids=["api reference", "links and pages"])
def test_each_breakage_fails_the_build_for_its_reason(breakages: list[str], tmp_path: Path) -> None:
    """The breakages in one copy of the docs, one build: each is named, and nothing else is
    (the untouched copy builds)."""
    repo = _copy_of_repo(tmp_path)
    for breakage in breakages:
        page, old, new, _ = BREAKAGES[breakage]
        path = repo / "docs" / page
        text = path.read_text(encoding="utf-8")
        assert not old or old in text, f"{page} no longer has {old!r}: update {breakage!r}"
        path.write_text(text.replace(old, new) if old else text + new, encoding="utf-8")
    done = _build(repo, tmp_path / "site")
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    complaints = [c for b in breakages for c in BREAKAGES[b][3]]
    missed = [c for c in complaints if c not in output]
    assert not missed, output
    assert all(any(c in line for c in complaints) for line in _warnings(output)), output


def test_a_build_that_reaches_for_the_network_fails(tmp_path: Path) -> None:
    """The guard itself: a hook that opens a connection (as a font or social-card plugin would)
    fails the build, so the offline check above can fail."""
    repo = _copy_of_repo(tmp_path)
    with (repo / "docs" / "_hooks" / "policyopt_docs.py").open("a", encoding="utf-8") as f:
        f.write('\nimport socket\n\nsocket.create_connection(("127.0.0.1", 9), timeout=1)\n')
    done = _build(repo, tmp_path / "site")
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "NETWORK ACCESS during the docs build" in output, output
    assert not _warnings(output), output
