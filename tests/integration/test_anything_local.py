"""optimize_anything on the real embedded model: single-task search over code (issue 25).

The reflection LM is the session's SmolLM2-135M (sampled, answers long enough for a function);
the candidate is ``is_palindrome``'s source, scored by its unit tests in the sandbox, with the
failing assertions as side information. The model rarely fixes the function: the test checks
that the whole flow runs on a real model within its caps, not that the code improves.
"""

from __future__ import annotations

import pytest

from policyopt import LocalLM, optimize_anything
from policyopt.lm.metered import MeteredLM
from policyopt.tasks.code import PALINDROME_CASES, PALINDROME_SEED, pass_rate

pytestmark = [pytest.mark.integration, pytest.mark.slow]


# quiet: about 30 s (two reflection calls of up to 160 tokens); 600 s survives a 3x slowdown
@pytest.mark.timeout(600)
def test_single_task_code_search_runs_on_the_local_model(local_lm: LocalLM) -> None:
    lm = MeteredLM(local_lm, temperature=0.9, max_tokens=160, stop=None)
    evaluate = pass_rate("is_palindrome", [([text], answer) for text, answer in PALINDROME_CASES])
    result = optimize_anything(
        PALINDROME_SEED,
        evaluate,
        objective="Fix is_palindrome so that every unit test passes.",
        lm=lm,
        max_rollouts=12,
        max_lm_calls=2,
        n_jobs=2,
        progress=False,
    )
    assert result.details["search"] == "single_task" and result.optimizer == "gepa"
    assert result.candidates[0].val_score == pytest.approx(13 / 30)  # the seed, sandboxed
    assert result.best_score >= result.candidates[0].val_score
    assert result.n_rollouts <= 12 and 1 <= lm.usage.calls <= 2
    assert result.stop_reason in {"lm_call_limit", "perfect_score", "budget", "stalled"}
    assert all(list(c.val_scores) == ["0"] for c in result.candidates)
