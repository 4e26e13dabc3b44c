"""SIGKILLed at random moments and resumed each time, a run never exceeds its budget in real
``evaluate`` calls and never pays a journaled result again, and with room in its budget ends where
the same run uninterrupted ends (benchmarks/kill_loop.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.waits]


def _kill_loop() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "kill_loop.py"
    spec = importlib.util.spec_from_file_location("kill_loop", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(600)
@pytest.mark.parametrize("algorithm", ["gepa", "mipro"])
def test_the_budget_is_exact_across_sigkills(tmp_path: Path, algorithm: str) -> None:
    row = _kill_loop().kill_loop(algorithm, budget=200, kills=3, seed=7, work=tmp_path, src=None)
    assert row["exit"] == 0, row
    assert row["kills"] >= 1, f"no kill landed mid-run: {row}"
    assert row["real_calls"] <= row["budget"], row
    assert row["journaled_twice"] == 0, row
    # only rollouts in flight at a kill (started, never recorded) may be paid again
    assert row["paid_twice"] <= row["lost"], row
    assert row["n_rollouts"] >= row["real_calls"], row


@pytest.mark.timeout(600)
@pytest.mark.parametrize("algorithm", ["gepa", "opro"])
def test_sigkilled_runs_with_failures_end_where_the_uninterrupted_run_ends(
    tmp_path: Path, algorithm: str
) -> None:
    """With room in the budget for the rollouts in flight at each kill, the resumed run (its
    recorded failures replayed) has the uninterrupted run's candidates, scores, LM calls and
    best prompt."""
    row = _kill_loop().kill_loop(
        algorithm, budget=600, kills=3, seed=1, work=tmp_path, src=None, flaky=0.1
    )
    assert row["exit"] == 0 and row["kills"] >= 1, row
    assert row["failed"] > 0 and row["journaled_twice"] == 0, row
    assert row["same_as_uninterrupted"], row
