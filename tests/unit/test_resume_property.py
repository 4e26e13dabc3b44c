"""Resume equivalence as a property: crash a run after any number of finished rollouts,
resume it, and it pays no finished rollout again and ends exactly like an unbroken run."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policyopt import GEPA, MIPRO
from policyopt.testing.conformance import (
    CountingEvaluate,
    _Crash,
    comparable,
    keyword_reflection_lm,
    keyword_task,
)
from tests.unit.mipro.test_mipro import proposer


def _gepa(run_dir: Path, n_jobs: int) -> GEPA:
    return GEPA(
        reflection_lm=keyword_reflection_lm(),
        max_rollouts=100,
        run_dir=str(run_dir),
        n_jobs=n_jobs,
        progress=False,
        seed=2,
    )


def _mipro(run_dir: Path, n_jobs: int) -> MIPRO:
    return MIPRO(
        proposer_lm=proposer(),
        max_rollouts=120,
        num_candidates=4,
        num_trials=8,
        minibatch_size=6,
        run_dir=str(run_dir),
        n_jobs=n_jobs,
        progress=False,
        seed=2,
    )


BUILDERS: dict[str, Any] = {"gepa": _gepa, "mipro": _mipro}
_REFERENCE: dict[str, tuple[Any, int]] = {}


def _reference(name: str, tmp: Path) -> tuple[Any, int]:
    if name not in _REFERENCE:
        evaluate = CountingEvaluate()
        program, train, val = keyword_task(evaluate=evaluate)
        result = BUILDERS[name](tmp / f"ref-{name}", 1).optimize(program, train, val)
        _REFERENCE[name] = (result, evaluate.total)
    return _REFERENCE[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gepa", "mipro"])
@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(fraction=st.floats(0.02, 0.98), crashes=st.integers(1, 3))
def test_any_crash_point_resumes_to_the_same_result(
    tmp_path_factory: pytest.TempPathFactory, name: str, fraction: float, crashes: int
) -> None:
    tmp = tmp_path_factory.mktemp("resume")
    reference, total = _reference(name, tmp_path_factory.mktemp("ref"))
    run_dir = tmp / "run"
    paid: list[CountingEvaluate] = []
    for k in range(crashes):  # crash again and again, each time further along
        crash_at = max(1, int(total * fraction * (k + 1) / crashes)) - sum(e.total for e in paid)
        evaluate = CountingEvaluate(crash_after=max(0, crash_at))
        program, train, val = keyword_task(evaluate=evaluate)
        with contextlib.suppress(_Crash):
            BUILDERS[name](run_dir, 1).optimize(program, train, val)
        paid.append(evaluate)
    final = CountingEvaluate()
    program, train, val = keyword_task(evaluate=final)
    result = BUILDERS[name](run_dir, 1).optimize(program, train, val)
    paid.append(final)
    keys = [key for e in paid for key in e.calls]
    assert len(keys) == len(set(keys)), "a finished rollout was paid again"
    assert sum(e.total for e in paid) == total
    assert comparable(result) == comparable(reference)
