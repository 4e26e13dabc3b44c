"""examples/own_optimizer/hill_climb.py, a fourth optimizer on the public run kit, keeps the
contract of the built-ins: the whole conformance suite, a climb on the keyword task, a free
replay of a finished run_dir, a registry entry, and an estimate that bounds what a run spends."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from policyopt.events import RunStarted
from policyopt.registry import get_spec, optimizer_names
from policyopt.testing import ScriptedLM
from policyopt.testing.conformance import (
    CHECKS,
    Conformance,
    CountingEvaluate,
    keyword_reflection_lm,
    keyword_task,
)
from policyopt.testing.scripted import flaky_lm

sys.path.insert(0, str(Path(__file__).parents[2] / "examples" / "own_optimizer"))
from hill_climb import SPEC, HillClimb

pytestmark = pytest.mark.waits  # see tests/conftest.py


def factory(**kwargs: Any) -> HillClimb:
    kwargs.setdefault("lm", keyword_reflection_lm())
    return HillClimb(progress=False, **kwargs)


SUITE = Conformance(factory, lm_name="lm")


@pytest.mark.parametrize("check", CHECKS)
def test_conformance(check: str, tmp_path: Path) -> None:
    SUITE.run(check, tmp_path)


def test_it_climbs_on_the_keyword_task_and_announces_itself() -> None:
    events: list[Any] = []
    program, train, val = keyword_task()
    result = factory(max_rollouts=120, listeners=[events.append]).optimize(program, train, val)
    scores = [c.val_score for c in result.candidates]
    assert result.optimizer == "hill-climb" and result.stop_reason == "perfect_score"
    assert scores == sorted(scores) and scores[0] == 0.0 and result.best_score == 1.0
    assert [c.origin for c in result.candidates] == ["seed"] + ["hill-climb"] * (len(scores) - 1)
    assert all(c.parents == [c.index - 1] for c in result.candidates[1:])  # each climbs the last
    started = next(e for e in events if isinstance(e, RunStarted))
    assert started.optimizer == "hill-climb" and started.settings["minibatch_size"] == 3


def test_a_finished_run_dir_replays_at_no_cost(tmp_path: Path) -> None:
    def run(evaluate: CountingEvaluate, lm: ScriptedLM) -> Any:
        program, train, val = keyword_task(evaluate=evaluate)
        return factory(lm=lm, max_rollouts=90, run_dir=str(tmp_path)).optimize(program, train, val)

    first_lm, again_lm, idle = keyword_reflection_lm(), keyword_reflection_lm(), CountingEvaluate()
    first = run(CountingEvaluate(), first_lm)
    again = run(idle, again_lm)
    assert first_lm.calls > 0 and idle.total == 0 and again_lm.calls == 0
    assert again.best_prompt == first.best_prompt and again.n_rollouts == first.n_rollouts
    assert again.lm_usage == first.lm_usage  # the bill of the run, not of this process


def test_the_registry_finds_and_builds_it() -> None:
    assert "hill-climb" in optimizer_names() and get_spec("hill-climb") is SPEC
    optimizer = SPEC.build(lm=keyword_reflection_lm(), max_rollouts=60, progress=False)
    program, train, val = keyword_task()
    assert optimizer.optimize(program, train, val).best_score > 0.0
    plan = SPEC.estimate({}, budget=60, n_train=12, n_val=12)
    assert plan["rollouts"] == 60 and plan["lm_calls"] == 3 and plan["lm_calls_cap"] == 9


@pytest.mark.parametrize("make_lm", [keyword_reflection_lm, flaky_lm], ids=["keyword", "flaky"])
@pytest.mark.parametrize("budget", [12, 30, 50, 90])
def test_the_estimate_bounds_rollouts_and_lm_calls(make_lm: Any, budget: int) -> None:
    lm, evaluate = make_lm(), CountingEvaluate()
    program, train, val = keyword_task(evaluate=evaluate)
    result = factory(lm=lm, max_rollouts=budget, stop_at_perfect=False).optimize(
        program, train, val
    )
    plan = result.details["estimate"]
    assert plan == SPEC.estimate({"stop_at_perfect": False}, budget=budget, n_train=12, n_val=12)
    assert evaluate.total == result.n_rollouts <= plan["rollouts"] <= budget  # type: ignore[operator]
    assert plan["lm_calls_min"] <= lm.calls <= plan["lm_calls_cap"]  # type: ignore[operator]
    assert lm.calls <= plan["lm_calls_max"]  # type: ignore[operator]
