"""GEPA's strategies: built-ins by name, users' own objects, recorded and resumable."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from policyopt import GEPA
from policyopt.errors import ConfigError
from policyopt.gepa.pareto import ParetoFront
from policyopt.testing.conformance import (
    Conformance,
    CountingEvaluate,
    keyword_reflection_lm,
    keyword_task,
)


class Newest:
    """A user-written selector: always the most recent candidate."""

    def __init__(self) -> None:
        self.calls = 0

    def select(self, front: ParetoFront, aggregate: Mapping[int, float], rng: random.Random) -> int:
        self.calls += 1
        return max(aggregate)


class TieOk:
    """Accept a child that ties its parent."""

    def accept(self, parent: Sequence[float], child: Sequence[float]) -> bool:
        return sum(child) >= sum(parent)

    def config(self) -> dict[str, Any]:
        return {"ties": True}


class KeywordProposer:
    """A proposer with no LM at all: adds the keywords the feedback names."""

    def __init__(self) -> None:
        self.calls = 0

    def propose(
        self, key: str, component: str, current: str, records: Sequence[Mapping[str, str]]
    ) -> str | None:
        self.calls += 1
        text = " ".join(str(r) for r in records)
        missing = sorted(set(re.findall(r"lacks the word (\w+)", text)))
        return f"{current} {missing[0]}" if missing else None


class Fixed:
    """A minibatch sampler: always the first ``size`` ids."""

    def __init__(self, ids: Sequence[str], size: int, rng: random.Random) -> None:
        self.batch = list(ids)[:size]

    def next(self) -> list[str]:
        return list(self.batch)


def gepa(**kwargs: Any) -> GEPA:
    kwargs.setdefault("reflection_lm", keyword_reflection_lm())
    return GEPA(max_rollouts=150, progress=False, **kwargs)


def test_a_user_written_selector_is_used_and_recorded() -> None:
    selector = Newest()
    program, train, val = keyword_task()
    result = gepa(candidate_selection=selector).optimize(program, train, val)
    assert selector.calls > 0 and result.best_score > result.candidates[0].val_score
    name = result.settings["candidate_selection"]
    assert name == f"custom:{__name__}.Newest"


def test_builtin_names_and_user_objects_for_every_strategy() -> None:
    program, train, val = keyword_task()
    proposer = KeywordProposer()
    result = gepa(
        proposer=proposer,
        acceptance=TieOk(),
        minibatch_sampler=Fixed,
        component_selection="all",
        merge_pairing="common_ancestor",
    ).optimize(program, train, val)
    assert proposer.calls > 0 and result.best_score > result.candidates[0].val_score
    assert result.settings["acceptance"] == {
        "strategy": f"custom:{__name__}.TieOk",
        "config": {"ties": True},
    }
    assert result.lm_usage["reflection"].calls == 0  # the custom proposer used no LM
    for name in ("current_best", "epsilon_greedy"):
        assert gepa(candidate_selection=name).optimize(program, train, val).best_score > 0
    assert gepa(acceptance="non_decreasing").optimize(program, train, val).best_score > 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"candidate_selection": "random"}, "unknown candidate_selection 'random'.*pareto"),
        ({"acceptance": object()}, "acceptance.*AcceptanceCriterion"),
        ({"minibatch_sampler": 3}, "minibatch_sampler"),
        ({"proposer": "gpt"}, "unknown proposer 'gpt'.*reflection"),
    ],
)
def test_bad_strategies_are_clear_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        gepa(**kwargs)


def test_custom_strategies_pass_the_conformance_suite(tmp_path: Path) -> None:
    def factory(**kwargs: Any) -> GEPA:
        kwargs.setdefault("reflection_lm", keyword_reflection_lm())
        return GEPA(progress=False, candidate_selection=Newest(), acceptance=TieOk(), **kwargs)

    suite = Conformance(factory)
    suite.check_determinism()
    suite.check_resume_spends_nothing(tmp_path)


class Moody(Newest):
    """Declares that a replay would not repeat its choices."""

    resumable = False


def test_a_strategy_that_cannot_resume_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    program, train, val = keyword_task(evaluate=CountingEvaluate())
    result = gepa(candidate_selection=Moody(), run_dir=str(tmp_path)).optimize(program, train, val)
    assert result.details["resume_exact"] is False
    assert "resumable=False" in caplog.text
