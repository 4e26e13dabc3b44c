"""OPRO on the built-in task with the real local model as task and meta LM."""

from __future__ import annotations

from pathlib import Path

import pytest

from policyopt import LocalLM, OptimizationResult
from policyopt.opro import OPRO
from policyopt.opro.spec import SPEC
from policyopt.tasks import get_task

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(600)  # under a minute on a loaded 2-core machine; room for a 3x slowdown
def test_opro_runs_on_the_local_model_within_budget(local_lm: LocalLM, tmp_path: Path) -> None:
    task = get_task("antonyms")
    train, val = task.train[:4], task.val[:4]
    settings = SPEC.plan({}, budget=24, n_train=len(train), n_val=len(val), small_model=True)
    with LocalLM.for_reflection(**SPEC.small_model_lm) as meta:

        def make() -> OPRO:
            return OPRO(
                meta_lm=meta,
                max_rollouts=24,
                n_jobs=4,
                minibatch_size=4,
                progress=False,
                run_dir=str(tmp_path / "run"),
                **settings,
            )

        program = task.program(local_lm)
        result = make().optimize(program, train, val)
        assert result.optimizer == "opro" and result.n_rollouts <= 24
        # the rollout budget or the optimizer-LM calls it announced (rejected answers count)
        ends = {"budget", "perfect_score", "lm_call_limit"}
        assert result.stop_reason in ends, result.details["stop_detail"]
        assert result.candidates[0].origin == "seed" and len(result.candidates[0].val_scores) == 4
        assert result.best_score >= result.candidates[0].val_score
        assert result.lm_usage["meta"].calls >= 1 and result.details["steps"] >= 1  # type: ignore[operator]
        assert OptimizationResult.from_json(result.to_json()) == result
        calls = (local_lm.usage.calls, meta.usage.calls)
        again = make().optimize(program, train, val)
    # the finished run replays from its journal: no task or meta LM call, same result
    assert (local_lm.usage.calls, meta.usage.calls) == calls
    assert again.best_prompt == result.best_prompt and again.n_rollouts == result.n_rollouts
