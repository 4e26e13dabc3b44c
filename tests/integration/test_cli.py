"""`policyopt demo`, the main job, end to end on the real local model.

The GEPA demo (the default) runs in test_demo_repro.py, which checks its printed report and JSON on
its quiet run; this file runs the MIPRO demo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]


@pytest.mark.slow
def test_demo_runs_mipro(tmp_path: Path) -> None:
    out = tmp_path / "demo.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "policyopt.cli",
            "demo",
            "--algorithm",
            "mipro",
            "--limit",
            "6",
            "--budget",
            "30",
            "--json",
            str(out),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=900,  # two model starts and a search: ~1 min quiet, minutes on a busy machine
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "MIPRO spent" in proc.stdout
    result = json.loads(out.read_text())["result"]
    assert result["optimizer"] == "mipro" and result["n_rollouts"] <= 30
    assert result["lm_usage"]["proposer"]["calls"] >= 2  # the summary and proposals


def test_tasks_lists_the_builtin_task() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "policyopt.cli", "tasks"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert proc.stdout.startswith("antonyms:")
