"""What the run kit guarantees every optimizer: the optimizer-LM bill is bounded by the budget."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from policyopt import GEPA, MIPRO, OPRO, Score
from policyopt.protocol import Optimizer
from policyopt.testing import ScriptedLM
from policyopt.testing.conformance import CountingEvaluate, keyword_reflection_lm, keyword_task
from tests.unit.test_golden_journals import _mipro_lm, _opro_lm

#: (factory taking the LM and the shared settings, the LM factory)
OPTIMIZERS: dict[str, tuple[Callable[..., Optimizer], Callable[[], ScriptedLM]]] = {
    "gepa": (lambda lm, **kw: GEPA(reflection_lm=lm, **kw), keyword_reflection_lm),
    "mipro": (
        lambda lm, **kw: MIPRO(proposer_lm=lm, num_candidates=4, num_trials=8, **kw),
        _mipro_lm,
    ),
    "opro": (lambda lm, **kw: OPRO(meta_lm=lm, **kw), _opro_lm),
}


class FailsOnSomeExamples(CountingEvaluate):
    """Fails on two thirds of the training examples while ``broken``."""

    def __init__(self, broken: bool) -> None:
        super().__init__()
        self.broken = broken

    def __call__(self, prompt: Any, example: dict[str, str]) -> Score:
        if self.broken and example["id"].startswith("t") and int(example["id"][1:]) % 3:
            raise RuntimeError("backend down")
        return super().__call__(prompt, example)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_resumed_run_makes_no_lm_call_the_spent_budget_cannot_score(
    name: str, tmp_path: Path
) -> None:
    """Rollouts paid by an earlier segment that will not replay (failures) still count: the
    resumed run stops on "budget" instead of proposing children nobody can pay for."""
    make, make_lm = OPTIMIZERS[name]
    settings: dict[str, Any] = {
        "max_rollouts": 60,
        "progress": False,
        "run_dir": str(tmp_path / "run"),
        "max_error_rate": None,
        "quarantine_after": None,
        "n_jobs": 2,
    }
    first = FailsOnSomeExamples(broken=True)
    program, train, val = keyword_task(evaluate=first)
    make(make_lm(), **settings).optimize(program, train, val)
    fixed = FailsOnSomeExamples(broken=False)
    program, train, val = keyword_task(evaluate=fixed)
    lm = make_lm()
    result = make(lm, **settings).optimize(program, train, val)
    journal = (tmp_path / "run" / "journal.jsonl").read_text(encoding="utf-8")
    paid = journal.count('"type": "start"')
    assert paid <= 60, "the hard budget holds across segments"
    if paid == 60:  # spent: nothing more may be asked of the optimizer's LM once it is
        assert result.stop_reason == "budget"
    # every live call of the resumed segment was scored by at least one rollout
    live_keys = len(lm.prompts)
    assert live_keys <= max(0, fixed.total), (live_keys, fixed.total)


def flaky_lm() -> ScriptedLM:
    """Every other answer is empty (unusable); the others are new instructions."""
    count = {"n": 0}

    def answer(text: str) -> str:
        count["n"] += 1
        return "" if count["n"] % 2 else f"```\nInstruction number {count['n']}.\n```"

    return ScriptedLM(answer)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_no_run_makes_more_lm_calls_than_it_announced(name: str) -> None:
    """A flat task (no prompt beats another) and an LM whose every other answer is unusable:
    the worst case for the bill. The run keeps to the cap it announced, at most 3x its
    forecast, and says so in the estimate."""
    make, _ = OPTIMIZERS[name]
    program, train, val = keyword_task()
    program = type(program)(program.prompt, lambda prompt, example: Score(0.5, feedback="meh"))
    lm = flaky_lm()
    started: list[Any] = []
    result = make(lm, max_rollouts=150, progress=False, listeners=[started.append]).optimize(
        program, train, val
    )
    estimate = started[0].estimate
    assert estimate == result.details["estimate"]
    assert estimate["lm_calls_cap"] <= 3 * max(1, estimate["lm_calls"])
    assert estimate["lm_calls_max"] <= estimate["lm_calls_cap"]
    assert len(lm.prompts) <= estimate["lm_calls_cap"], (len(lm.prompts), estimate)


def test_the_users_max_lm_calls_is_the_cap() -> None:
    program, train, val = keyword_task()
    lm = flaky_lm()
    result = GEPA(reflection_lm=lm, max_rollouts=150, max_lm_calls=5, progress=False).optimize(
        program, train, val
    )
    assert result.details["estimate"]["lm_calls_cap"] == 5  # type: ignore[index]
    assert len(lm.prompts) <= 5 and result.stop_reason == "lm_call_limit"
