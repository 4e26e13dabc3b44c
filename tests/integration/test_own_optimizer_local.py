"""examples/own_optimizer/hill_climb.py on the built-in antonyms task with the real local model as
task and rewrite LM: a tiny budget, kept to, and a finished run_dir replayed at no cost."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from policyopt import LocalLM, OptimizationResult
from policyopt.tasks import get_task

sys.path.insert(0, str(Path(__file__).parents[2] / "examples" / "own_optimizer"))
from hill_climb import SPEC, HillClimb

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(600)  # two steps of a 135M model and a replay; room for a loaded machine
def test_hill_climb_runs_on_the_local_model_within_budget(
    local_lm: LocalLM, tmp_path: Path
) -> None:
    task = get_task("antonyms")
    train, val = task.train[:4], task.val[:4]
    program = task.program(local_lm)
    with LocalLM.for_reflection(**SPEC.small_model_lm) as rewriter:

        def make() -> HillClimb:
            return HillClimb(
                lm=rewriter, max_rollouts=16, n_jobs=4, progress=False, run_dir=str(tmp_path)
            )

        result = make().optimize(program, train, val)
        assert result.optimizer == "hill-climb" and result.n_rollouts <= 16
        # the 135M model may write no usable rewrite: the LM cap its estimate announced ends it
        ends = {"budget", "perfect_score", "stalled", "lm_call_limit"}
        assert result.stop_reason in ends, result.details
        assert result.candidates[0].origin == "seed" and len(result.candidates[0].val_scores) == 4
        assert result.best_score >= result.candidates[0].val_score
        assert result.details["steps"] >= 1  # type: ignore[operator]
        plan = result.details["estimate"]
        assert result.lm_usage["rewrite"].calls <= plan["lm_calls_cap"]  # type: ignore[index]
        assert OptimizationResult.from_json(result.to_json()) == result
        calls = (local_lm.usage.calls, rewriter.usage.calls)
        again = make().optimize(program, train, val)
    # the finished run replays from its journal: no task or rewrite LM call, the same result
    assert (local_lm.usage.calls, rewriter.usage.calls) == calls
    assert again.best_prompt == result.best_prompt and again.n_rollouts == result.n_rollouts
