"""MIPRO from a budget alone on the built-in task, with the real local model as task and
proposer LM."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from policyopt import MIPRO, LocalLM, Program, Score
from policyopt.mipro.budget import smallest_budget
from policyopt.mipro.spec import SPEC
from policyopt.tasks import get_task

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(900)  # 220 s on the 2-core machine beside a benchmark; a 3x slowdown fits
def test_mipro_from_a_budget_alone_runs_a_trial_within_it(local_lm: LocalLM) -> None:
    task = get_task("antonyms")
    train, val = task.train[:6], task.val[:5]
    budget = 30
    assert smallest_budget(len(train), len(val)) < budget  # the plan can run a trial
    inner = task.program(local_lm)
    calls = {"n": 0}
    lock = threading.Lock()

    def evaluate(prompt: Any, example: Any) -> Score | float:
        with lock:
            calls["n"] += 1
        return inner.evaluate(prompt, example)

    with LocalLM.for_reflection(**SPEC.small_model_lm) as proposer:
        optimizer = MIPRO(proposer_lm=proposer, max_rollouts=budget, n_jobs=4, progress=False)
        result = optimizer.optimize(Program(inner.prompt, evaluate), train, val)
    assert calls["n"] == result.n_rollouts <= budget
    assert len(result.details["trials"]) >= 1  # type: ignore[arg-type]
    plan = result.details["plan"]
    assert plan["source"] == "budget" and plan["num_trials"] >= 1  # type: ignore[index]
    estimate = result.details["estimate"]
    assert result.n_rollouts <= estimate["rollouts_max"] <= budget  # type: ignore[index]
    assert result.lm_usage["proposer"].calls <= estimate["proposer_calls_max"]  # type: ignore[index]
    assert result.best_score >= result.candidates[0].val_score


@pytest.mark.timeout(900)
def test_advice_proposals_on_the_local_model_give_instructions_that_state_the_rule(
    local_lm: LocalLM,
) -> None:
    """The small-model default: SmolLM2 restates the feedback's rule as instructions (its
    grounded proposals were all unusable on this task), and the run keeps its budget."""
    task = get_task("antonyms")
    train, val = task.train[:8], task.val[:5]
    settings = SPEC.plan({}, budget=40, n_train=len(train), n_val=len(val), small_model=True)
    assert settings["instruction_proposer"] == "advice"
    with LocalLM.for_reflection(**SPEC.small_model_lm) as proposer:
        optimizer = MIPRO(
            proposer_lm=proposer, max_rollouts=40, n_jobs=4, progress=False, **settings
        )
        result = optimizer.optimize(task.program(local_lm), train, val)
    assert result.n_rollouts <= 40
    instructions = result.details["instructions"]["prompt"]  # type: ignore[index]
    assert instructions[0] == task.seed_prompt and len(instructions) >= 2, instructions
    # what the feedback says ("give the opposite of the word"), not an example pair
    assert any("opposite" in text.lower() for text in instructions[1:]), instructions
    assert result.details["final_choice"]["rule"] == "lower_bound"  # type: ignore[index]
