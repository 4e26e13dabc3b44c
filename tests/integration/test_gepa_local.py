"""GEPA on a built-in task with the real local model as task and reflection LM: it finds a
better prompt than the seed's (resuming on the real model: test_readme.py)."""

from __future__ import annotations

import pytest

from policyopt import GEPA, LocalLM, OptimizationResult
from policyopt.gepa import SMALL_MODEL_SETTINGS
from policyopt.tasks import get_task

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_gepa_on_the_local_model_beats_the_seed_prompt_within_budget(local_lm: LocalLM) -> None:
    task = get_task("addition")
    with LocalLM.for_reflection() as reflection:
        optimizer = GEPA(
            reflection_lm=reflection,
            # on antonyms (12 train / 6 val) no prompt beat the seed's at 44, 60 or 80 rollouts
            # once the proposal prompts asked for what fits the token limit (issue 22), one did
            # at 100; addition on 8 / 4 finds one at 38 rollouts (seed 0), at a third of the CPU
            max_rollouts=50,
            n_jobs=4,
            progress=False,
            seed=0,
            **SMALL_MODEL_SETTINGS,
        )
        result = optimizer.optimize(task.program(local_lm), task.train[:8], task.val[:4])
    assert result.n_rollouts <= 50 and result.stop_reason in {"budget", "perfect_score"}
    # the small-model settings (advice template, 4 samples per reflection) find a better
    # prompt than the seed's in this budget, by more than one val example (the lower-bound
    # final choice refuses a one-example win); the run is deterministic, so this is no lottery
    assert result.best_score >= result.candidates[0].val_score + 0.5
    assert result.lm_usage["reflection"].calls >= 1
    assert OptimizationResult.from_json(result.to_json()) == result
