"""The optimizer-LM budget: max_lm_calls / max_lm_tokens stop every optimizer between steps."""

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
def test_max_lm_calls_stops_the_run(cls: type[Any]) -> None:
    free = _run(cls, stop_at_perfect=False, patience=50)
    capped = _run(cls, stop_at_perfect=False, patience=50, max_lm_calls=2)
    assert capped.stop_reason == "lm_call_limit"
    assert free.stop_reason != "lm_call_limit"
    assert capped.n_rollouts < free.n_rollouts
    # the optimizer LM made at least the cap; at most one step's calls past it
    calls = sum(u.calls for u in capped.lm_usage.values())
    assert 2 <= calls < sum(u.calls for u in free.lm_usage.values())


def test_mipro_stops_on_max_lm_tokens() -> None:
    result = _run(MIPRO, auto="light", max_lm_tokens=1)
    assert result.stop_reason == "lm_token_limit"


def test_the_settings_are_validated() -> None:
    with pytest.raises(Exception, match="max_lm_calls"):
        GEPA(lm=keyword_reflection_lm(), max_rollouts=10, max_lm_calls=0)
