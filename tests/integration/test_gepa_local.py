"""GEPA on the built-in task with the real local model as task and reflection LM."""

from __future__ import annotations

from pathlib import Path

import pytest

from policyopt import GEPA, LocalLM, OptimizationResult
from policyopt.gepa import SMALL_MODEL_SETTINGS
from policyopt.tasks import get_task

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_gepa_runs_on_the_local_model_within_budget_and_resumes(
    local_lm: LocalLM, tmp_path: Path
) -> None:
    task = get_task("antonyms")
    with LocalLM.for_reflection() as reflection:

        def make() -> GEPA:
            return GEPA(
                reflection_lm=reflection,
                max_rollouts=70,
                n_jobs=4,
                progress=False,
                **SMALL_MODEL_SETTINGS,
                run_dir=str(tmp_path / "run"),
            )

        program = task.program(local_lm)
        result = make().optimize(program, task.train[:12], task.val[:12])
        assert result.n_rollouts <= 70 and result.stop_reason in {"budget", "perfect_score"}
        # the small-model settings (advice template, 4 samples per reflection) find a better
        # prompt than the seed's in this budget; the run is deterministic, so this is no lottery
        assert result.best_score > result.candidates[0].val_score
        assert result.lm_usage["reflection"].calls >= 1
        assert OptimizationResult.from_json(result.to_json()) == result
        calls_before = local_lm.usage.calls
        again = make().optimize(program, task.train[:12], task.val[:12])
    # the finished run replays from its journal: no task LM call, same best prompt
    assert local_lm.usage.calls == calls_before
    assert again.best_prompt == result.best_prompt and again.n_rollouts == result.n_rollouts
