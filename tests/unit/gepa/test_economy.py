"""The calls keep to the rollouts' pace: while the reflection calls run ahead of
``min_rollouts_per_call`` rollouts each, children are judged on several minibatches."""

from __future__ import annotations

import re
from typing import Any

from policyopt import GEPA, Score
from policyopt.testing.conformance import keyword_task
from policyopt.testing.scripted import flaky_lm


def _flat(**settings: Any) -> tuple[Any, Any]:
    """A task where no prompt beats another, with an LM whose every other answer is unusable."""
    program, train, val = keyword_task(n_train=24)
    program = type(program)(program.prompt, lambda prompt, example: Score(0.5, feedback="meh"))
    lm = flaky_lm()
    result = GEPA(reflection_lm=lm, max_rollouts=150, progress=False, **settings).optimize(
        program, train, val
    )
    return result, lm


def test_a_flat_task_makes_no_more_calls_than_the_rollouts_pay_for() -> None:
    kept, kept_lm = _flat()
    free, free_lm = _flat(min_rollouts_per_call=0, max_lm_calls=1000)
    assert kept.n_rollouts >= 140 and free.n_rollouts >= 140  # both spend their budget
    assert len(kept_lm.prompts) <= 150 / 6 + 4  # one iteration's calls past the pace at most
    assert len(free_lm.prompts) > 2 * len(kept_lm.prompts)
    assert kept.details["counts"]["widened"] > 0 and free.details["counts"]["widened"] == 0
    # widened or not, a reflection is shown one minibatch of records
    shown = [len(re.findall(r"(?m)^### Example \d+$", prompt)) for prompt in kept_lm.prompts]
    assert set(shown) == {3}


def test_the_forecast_is_within_half_again_of_the_calls_made() -> None:
    result, lm = _flat()
    point = result.details["estimate"]["lm_calls"]
    assert point / 1.5 <= len(lm.prompts) <= point * 1.5
    assert result.details["estimate"]["lm_calls_max"] <= 3 * point
