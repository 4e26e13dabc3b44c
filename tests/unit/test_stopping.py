"""The optimizer-LM budget: max_lm_calls / max_lm_tokens are hard caps in every optimizer: no call
starts past them, and the run stops with its reason."""

from __future__ import annotations

from typing import Any

import pytest

from policyopt import GEPA, MIPRO, OPRO
from policyopt.stopping import Stopper
from policyopt.testing.conformance import keyword_reflection_lm, keyword_task
from policyopt.types import LMUsage


def test_the_stopper_by_hand() -> None:
    stopper = Stopper(max_lm_calls=3, max_lm_tokens=100)
    few = LMUsage(calls=2, prompt_tokens=40, completion_tokens=10)
    assert stopper.reason(cost_usd=None, steps_without_improvement=0, lm_usage=few) is None
    calls = LMUsage(calls=3, prompt_tokens=40, completion_tokens=10)
    assert stopper.reason(cost_usd=None, steps_without_improvement=0, lm_usage=calls) == (
        "lm_call_limit"
    )
    tokens = LMUsage(calls=1, prompt_tokens=90, completion_tokens=10)
    assert stopper.reason(cost_usd=None, steps_without_improvement=0, lm_usage=tokens) == (
        "lm_token_limit"
    )
    assert stopper.reason(cost_usd=None, steps_without_improvement=0) is None  # no usage given


def _run(cls: type[Any], **settings: Any) -> Any:
    program, train, val = keyword_task()
    return cls(
        lm=keyword_reflection_lm(), max_rollouts=2000, progress=False, seed=0, **settings
    ).optimize(program, train, val)


@pytest.mark.parametrize("cls", [GEPA, OPRO])
@pytest.mark.parametrize("cap", [1, 2, 5])
def test_max_lm_calls_stops_the_run_at_exactly_the_cap(cls: type[Any], cap: int) -> None:
    # several proposals at once (4 samples per reflection, 2 slots) must not overshoot either
    extra = {"proposals_per_reflection": 4} if cls is GEPA else {}
    free = _run(cls, stop_at_perfect=False, patience=50, **extra)
    capped = _run(cls, stop_at_perfect=False, patience=50, max_lm_calls=cap, **extra)
    assert capped.stop_reason == "lm_call_limit"
    assert free.stop_reason != "lm_call_limit"
    assert capped.n_rollouts < free.n_rollouts
    calls = sum(u.calls for u in capped.lm_usage.values())
    assert calls == cap < sum(u.calls for u in free.lm_usage.values())


def test_mipros_up_front_proposals_stay_under_the_cap() -> None:
    """MIPRO asks for all its instruction candidates before the first trial: the cap holds there
    too, and the run ends with what it has (the seed prompt scored) and the reason."""
    free = _run(MIPRO, auto="light")
    free_calls = sum(u.calls for u in free.lm_usage.values())
    assert free_calls > 3
    capped = _run(MIPRO, auto="light", max_lm_calls=3)
    assert sum(u.calls for u in capped.lm_usage.values()) == 3
    assert capped.stop_reason == "lm_call_limit"
    assert capped.best_prompt is not None


def test_mipro_stops_on_max_lm_tokens() -> None:
    result = _run(MIPRO, auto="light", max_lm_tokens=1)
    assert result.stop_reason == "lm_token_limit"


def test_the_settings_are_validated() -> None:
    with pytest.raises(Exception, match="max_lm_calls"):
        GEPA(lm=keyword_reflection_lm(), max_rollouts=10, max_lm_calls=0)
