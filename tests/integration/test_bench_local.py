"""`policyopt bench` end to end on the real local model, through the held-out grid's quick plan
(`benchmarks/heldout_grid.py --quick`, so the script cannot rot): cells, report, plots, the grid
summary, and a rerun that resumes without running a cell again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from policyopt.bench import load_records
from policyopt.bench.heldout import check_one_side

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TASK = "plural[feedback=bare]"


def _grid(out: Path) -> subprocess.CompletedProcess[str]:
    # the quick plan (budget 16, 4 examples a split) on one feedback kind: two cells
    command = [sys.executable, str(ROOT / "benchmarks" / "heldout_grid.py"), "--quick"]
    command += ["--tasks", TASK, "--n-jobs", "2", "--out", str(out)]
    return subprocess.run(command, capture_output=True, text=True, timeout=800, check=False)


@pytest.mark.timeout(1800)  # two runs (the second resumes), up to 800 s each when busy
def test_bench_runs_cells_on_the_local_model_and_resumes(tmp_path: Path) -> None:
    proc = _grid(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"## {TASK}" in proc.stdout and "## Overall" in proc.stdout  # the bench's report
    assert "Cells on the heldout side" in proc.stdout  # the grid summary
    assert f"| {TASK} | 101 |" in proc.stdout
    records = load_records(tmp_path)
    assert [(r.key.task, r.key.optimizer, r.status) for r in records] == [
        (TASK, "gepa", "ok"),
        (TASK, "mipro", "ok"),
    ]
    assert all(r.key.split_seed == 101 for r in records)
    assert check_one_side(records) == "heldout"
    for r in records:
        assert r.baseline_test is not None and r.baseline_test.n_examples == 4
        assert r.optimized_test is not None and r.optimized_test.n_examples == 4
        assert 0 < r.rollouts <= 16
        # the local model reports tokens; the search paid task-model and proposal calls
        assert r.task_usage.calls > 0 and r.task_usage.prompt_tokens > 0
        assert r.optimizer_usage.calls > 0
    for name in ("baseline_vs_optimized.png", "score_vs_rollouts.png", "score_vs_cost.png"):
        assert (tmp_path / name).stat().st_size > 5000
    again = _grid(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 cells to run, 2 already finished" in again.stderr
    assert [r.model_dump() for r in load_records(tmp_path)] == [r.model_dump() for r in records]
