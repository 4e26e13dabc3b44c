"""`policyopt demo`, the main job, end to end on the real local model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]


def test_demo_optimizes_and_reports_test_scores(tmp_path: Path) -> None:
    out = tmp_path / "demo.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "policyopt.cli",
            "demo",
            "--limit",
            "8",
            "--budget",
            "40",
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
    assert "accuracy on the held-out test split" in proc.stdout
    assert "GEPA spent" in proc.stdout and "optimized (GEPA)" in proc.stdout
    payload = json.loads(out.read_text())
    assert [row["prompt"] for row in payload["rows"]] == [
        "seed",
        "optimized (GEPA)",
        "hand-written reference",
    ]
    result = payload["result"]
    assert result["optimizer"] == "gepa" and result["n_rollouts"] <= 40
    assert result["lm_usage"]["reflection"]["calls"] >= 1


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
            "10",
            "--budget",
            "60",
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
    assert result["optimizer"] == "mipro" and result["n_rollouts"] <= 60
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
