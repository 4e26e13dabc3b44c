"""SIGKILLed at random moments and resumed each time, a run never exceeds its budget in real
``evaluate`` calls and never pays a journaled result again (benchmarks/kill_loop.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.integration


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
