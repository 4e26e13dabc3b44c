"""MIPRO's strategies: the search sampler, the instruction source, the demo-set builder."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import optuna
import pytest

from policyopt import MIPRO
from policyopt.errors import ConfigError
from policyopt.mipro.demos import Demo
from policyopt.testing.conformance import keyword_task
from tests.unit.mipro.test_mipro import BEST, proposer


def mipro(**kwargs: Any) -> MIPRO:
    kwargs.setdefault("proposer_lm", proposer())
    return MIPRO(
        max_rollouts=300,
        num_candidates=5,
        num_trials=12,
        minibatch_size=6,
        progress=False,
        **kwargs,
    )


class Fixed:
    """A user's instruction source: no LM, one known-good instruction."""

    def propose(
        self,
        component: str,
        seed_text: str,
        n: int,
        demo_sets: Sequence[Sequence[Demo]],
        seed_score: float | None = None,
    ) -> list[str]:
        return [seed_text, BEST]


class Counting:
    """A demo-set builder that records its calls and keeps only the empty set."""

    calls = 0

    def build(
        self,
        n_sets: int,
        bootstrapped: Sequence[Demo],
        labeled: Sequence[Demo],
        *,
        max_bootstrapped: int,
        max_labeled: int,
        rng: random.Random,
    ) -> list[list[Demo]]:
        Counting.calls += 1
        return [[]]


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_samplers_by_name_find_the_best_instruction(sampler: str) -> None:
    program, train, val = keyword_task()
    result = mipro(sampler=sampler).optimize(program, train, val)
    assert result.best_score == 1.0 and result.settings["sampler"] == sampler


def test_any_optuna_sampler_or_factory() -> None:
    program, train, val = keyword_task()
    seen: list[int] = []

    def factory(seed: int, n_startup: int) -> optuna.samplers.BaseSampler:
        seen.append(seed)
        return optuna.samplers.RandomSampler(seed=seed)

    first = mipro(sampler=factory).optimize(program, train, val)
    again = mipro(sampler=factory).optimize(program, train, val)
    assert seen and seen[0] == seen[1]  # the run's seed reaches the factory
    assert first.best_prompt == again.best_prompt
    instance = mipro(sampler=optuna.samplers.RandomSampler(seed=1)).optimize(program, train, val)
    assert instance.settings["sampler"] == "custom:optuna.samplers._random.RandomSampler"


def test_a_user_instruction_source_and_demo_builder() -> None:
    program, train, val = keyword_task()
    lm = proposer()
    result = mipro(
        proposer_lm=lm, instruction_proposer=Fixed(), demo_bootstrapper=Counting()
    ).optimize(program, train, val)
    assert result.best_score == 1.0 and BEST in str(result.best_prompt)
    assert Counting.calls >= 1
    assert lm.usage.calls == 0  # no summary, no proposals: the source replaced the LM


def test_without_demos_bootstraps_nothing() -> None:
    program, train, val = keyword_task()
    result = mipro(demo_bootstrapper="none").optimize(program, train, val)
    assert result.details["bootstrapped_demos"] == 0
    assert result.details["demo_set_sizes"] == [0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sampler": "bayes"}, "unknown sampler 'bayes'.*tpe, random"),
        ({"sampler": 3}, "sampler"),
        ({"instruction_proposer": object()}, "InstructionSource"),
        ({"demo_bootstrapper": "some"}, "bootstrap, none"),
    ],
)
def test_bad_strategies_are_clear_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        mipro(**kwargs)
