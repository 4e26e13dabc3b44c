"""Resume equivalence as a property: crash a run after any number of finished rollouts,
resume it, and it pays no finished rollout again and ends exactly like an unbroken run."""

from __future__ import annotations

import contextlib
import random
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


class FlakyBackend(CountingEvaluate):
    """Fails a seeded-random fifth of its calls, the draws in call order. The draws go on where
    a killed process left them (``rng`` is shared): the backend does not restart with the run.
    ``crash_after`` calls, the next one kills the run (it draws nothing: it never ran)."""

    def __init__(self, rng: random.Random, crash_after: int | None = None) -> None:
        super().__init__()
        self.rng = rng
        self.stop_at = crash_after
        self.attempts = 0

    def __call__(self, prompt: Any, example: dict[str, str]) -> Any:
        with self._lock:
            if self.stop_at is not None and self.attempts >= self.stop_at:
                raise _Crash("simulated crash")
            self.attempts += 1
            failed = self.rng.random() < 0.2
        if failed:
            raise RuntimeError("flaky backend: connection reset")
        return super().__call__(prompt, example)


_FLAKY_REFERENCE: dict[str, tuple[Any, int]] = {}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gepa", "mipro"])
@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(fraction=st.floats(0.02, 0.98))
def test_a_flaky_evaluate_killed_anywhere_resumes_to_the_same_result(
    tmp_path_factory: pytest.TempPathFactory, name: str, fraction: float
) -> None:
    """Recorded failures (and the quarantines they cause) replay as recorded: killed at any
    point and resumed, a run on a flaky backend ends like the run that was never killed."""
    if name not in _FLAKY_REFERENCE:
        whole = FlakyBackend(random.Random(7))
        program, train, val = keyword_task(evaluate=whole)
        reference = BUILDERS[name](tmp_path_factory.mktemp("ref"), 1).optimize(program, train, val)
        assert reference.details["failed_rollouts"] > 0
        _FLAKY_REFERENCE[name] = (reference, whole.attempts)
    reference, attempts = _FLAKY_REFERENCE[name]
    run_dir = tmp_path_factory.mktemp("flaky") / "run"
    rng = random.Random(7)
    killed = FlakyBackend(rng, crash_after=max(1, int(attempts * fraction)))
    program, train, val = keyword_task(evaluate=killed)
    with contextlib.suppress(_Crash):
        BUILDERS[name](run_dir, 1).optimize(program, train, val)
    rest = FlakyBackend(rng)
    program, train, val = keyword_task(evaluate=rest)
    result = BUILDERS[name](run_dir, 1).optimize(program, train, val)
    assert killed.attempts + rest.attempts == attempts, "a rollout was paid twice"
    assert comparable(result) == comparable(reference)
