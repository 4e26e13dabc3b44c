"""The README's "Your own program" commands, exactly as printed, on a copy of
examples/own_program/ with the real local model: estimate, optimize (then again: it resumes and
pays nothing), show."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
EXAMPLE = ROOT / "examples" / "own_program"
POLICYOPT = Path(sys.executable).with_name("policyopt")


def readme_commands() -> list[list[str]]:
    """The shell block of the README's "Your own program" section, one command a line."""
    section = README.read_text(encoding="utf-8").split("\n## Your own program", 1)[1]
    section = section.split("\n## ", 1)[0]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, "no bash block under '## Your own program'"
    lines = [line.split("#", 1)[0].strip() for line in match.group(1).splitlines()]
    return [shlex.split(line) for line in lines if line]


def run(argv: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    assert argv[0] == "policyopt", argv
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return subprocess.run(
        [str(POLICYOPT), *argv[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# ~3 min on the loaded 2-core machine (two model starts, 24 rollouts); 1500 s survives 3x
@pytest.mark.timeout(1500)
def test_the_readme_commands_run_on_the_local_model(tmp_path: Path) -> None:
    commands = readme_commands()
    assert [c[:2] for c in commands] == [
        ["policyopt", "estimate"],
        ["policyopt", "optimize"],
        ["policyopt", "show"],
    ]
    project = tmp_path / "own_program"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("runs", "__pycache__"))

    estimate = run(commands[0], project, 300)
    assert estimate.returncode == 0, estimate.stderr[-3000:]
    assert "budget 24 rollouts" in estimate.stdout and "$0.0000" in estimate.stdout

    optimize = run(commands[1], project, 1200)
    assert optimize.returncode == 0, optimize.stderr[-3000:]
    assert "Estimate: gepa on 8 train / 8 val" in optimize.stdout
    outcome = json.loads((project / "runs" / "antonyms" / "optimize.json").read_text())
    assert 8 <= outcome["n_rollouts"] <= 24
    best = outcome["best_prompt"]
    assert f"\n{best}\n" in optimize.stdout  # the best prompt, whole, on its own line(s)
    assert "rollouts" in optimize.stderr  # the plain progress lines (not a terminal)

    again = run(commands[1], project, 600)  # resumes: nothing left to pay
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads((project / "runs" / "antonyms" / "optimize.json").read_text())
    assert resumed["best_prompt"] == best and resumed["n_rollouts"] == outcome["n_rollouts"]
    assert resumed["task_lm_usage"]["calls"] == 0  # every rollout came from the journal

    show = run(commands[2], project, 300)
    assert show.returncode == 0, show.stderr[-3000:]
    assert best.split("\n")[0][:40] in show.stdout
