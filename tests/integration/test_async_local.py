"""An async evaluate awaiting the real local model's async call (litellm acompletion), through
GEPA, on a tiny budget."""

from __future__ import annotations

import pytest

from policyopt import GEPA, LocalLM, Program, Score
from policyopt.rollout.aio import await_blocking
from policyopt.tasks import get_task
from policyopt.testing import ScriptedLM

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(600)  # ~30 s on a loaded 2-core machine; room for a 3x slowdown
def test_gepa_with_an_async_evaluate_on_the_local_model(local_lm: LocalLM) -> None:
    task = get_task("antonyms")
    train, val = task.train[:4], task.val[:6]
    in_flight = {"now": 0, "peak": 0}

    async def evaluate(prompt: str, example: dict[str, object]) -> Score:
        in_flight["now"] += 1
        in_flight["peak"] = max(in_flight["peak"], in_flight["now"])
        try:
            answer = await local_lm.acall(f"{prompt}\n\nInput: {example['word']}\nAnswer:")
        finally:
            in_flight["now"] -= 1
        answers = [str(a) for a in example["answers"]]  # type: ignore[attr-defined]
        ok = any(a in answer.lower() for a in answers)
        return Score(float(ok), output=answer, feedback=None if ok else f"expected {answers[0]}")

    reflection = ScriptedLM([], default="```\nGive the opposite of the word below.\n```")
    calls_before = local_lm.usage.calls + local_lm.usage.cache_hits
    result = GEPA(
        reflection_lm=reflection, max_rollouts=20, n_jobs=4, progress=False, seed=0
    ).optimize(Program("Answer the question.", evaluate), train, val)
    assert result.n_rollouts <= 20 and result.details["failed_rollouts"] == 0
    assert len(result.candidates[0].val_scores) == 6
    # every rollout was one awaited call of the real model, several at once on one loop
    assert local_lm.usage.calls + local_lm.usage.cache_hits - calls_before == result.n_rollouts
    assert in_flight["peak"] > 1
    assert await_blocking(local_lm.acall("Say hi.")).strip() != ""
