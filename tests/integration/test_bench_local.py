"""`policyopt bench` end to end on the real local model: cells, report, plots, resumption."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from policyopt.bench import load_records

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _bench(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "policyopt.cli",
        "bench",
        "--tasks",
        "antonyms",
        "--optimizers",
        "gepa,mipro",
        "--seeds",
        "0",
        "--budget",
        "20",
        "--limit",
        "4",
        "--n-jobs",
        "2",
        "--out",
        str(out),
        *extra,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=800, check=False)


@pytest.mark.timeout(1800)  # two bench runs (the second resumes), up to 800 s each when busy
def test_bench_runs_cells_on_the_local_model_and_resumes(tmp_path: Path) -> None:
    proc = _bench(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "## antonyms" in proc.stdout and "## Overall" in proc.stdout
    records = load_records(tmp_path)
    assert [(r.key.optimizer, r.status) for r in records] == [("gepa", "ok"), ("mipro", "ok")]
    for r in records:
        assert r.baseline_test is not None and r.baseline_test.n_examples == 4
        assert r.optimized_test is not None and r.optimized_test.n_examples == 4
        assert 0 < r.rollouts <= 20
        # the local model reports tokens; the search paid task-model and proposal calls
        assert r.task_usage.calls > 0 and r.task_usage.prompt_tokens > 0
        assert r.optimizer_usage.calls > 0
    for name in ("baseline_vs_optimized.png", "score_vs_rollouts.png", "score_vs_cost.png"):
        assert (tmp_path / name).stat().st_size > 5000
    again = _bench(tmp_path)
    assert again.returncode == 0, again.stderr
    assert "0 cells to run, 2 already finished" in again.stderr
    assert [r.model_dump() for r in load_records(tmp_path)] == [r.model_dump() for r in records]
