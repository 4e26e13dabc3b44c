"""Core types: Score normalisation, prompt and dataset validation, result JSON round trip."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policyopt import Candidate, OptimizationResult, Program, Score
from policyopt.errors import ConfigError, DatasetError, ScoreTypeError
from policyopt.types import LMUsage, example_ids, normalize_score, prompt_key


def test_float_and_int_become_scores() -> None:
    assert normalize_score(0.5) == Score(0.5)
    assert normalize_score(1) == Score(1.0)
    assert normalize_score((0.25, "too long")) == Score(0.25, feedback="too long")
    s = Score(1.0, feedback="ok", output={"a": 1})
    assert normalize_score(s) is s


@pytest.mark.parametrize("bad", ["0.5", None, True, [1.0], {"score": 1}, (1.0, 2.0)])
def test_non_numbers_are_rejected_with_a_clear_message(bad: object) -> None:
    with pytest.raises(ScoreTypeError, match="must return a float"):
        normalize_score(bad)


def test_score_validates_its_fields() -> None:
    with pytest.raises(ScoreTypeError, match="Score.score"):
        Score("1")  # type: ignore[arg-type]
    with pytest.raises(ScoreTypeError, match="feedback"):
        Score(1.0, feedback=3)  # type: ignore[arg-type]
    with pytest.raises(ScoreTypeError, match="objectives"):
        Score(1.0, objectives={"cost": "high"})  # type: ignore[dict-item]
    assert Score(1, objectives={"cost": 2}).objectives == {"cost": 2.0}


def test_example_ids_use_index_or_id_key() -> None:
    assert example_ids([{"q": 1}, {"q": 2}]) == ["0", "1"]
    assert example_ids([{"id": "a"}, {"id": 7}]) == ["a", "7"]
    assert example_ids(["x", "y"]) == ["0", "1"]


def test_dataset_errors_name_the_problem() -> None:
    with pytest.raises(DatasetError, match="empty"):
        example_ids([], name="trainset")
    with pytest.raises(DatasetError, match="Duplicate example id 'a'.*examples 0 and 2"):
        example_ids([{"id": "a"}, {"id": "b"}, {"id": "a"}])
    with pytest.raises(DatasetError, match="must be a list"):
        example_ids("abc")  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match="ids must be str or int"):
        example_ids([{"id": [1]}])


@pytest.mark.parametrize("bad", [3, None, {"a": 1}, {}, ["x"], {1: "x"}])
def test_program_rejects_bad_prompts(bad: object) -> None:
    with pytest.raises(ConfigError, match="prompt"):
        Program(bad, lambda p, e: 1.0)  # type: ignore[arg-type]


def test_program_rejects_non_callable_evaluate() -> None:
    with pytest.raises(ConfigError, match="evaluate"):
        Program("p", "not callable")  # type: ignore[arg-type]


def test_program_components() -> None:
    assert Program("p", lambda p, e: 1.0).components == ["prompt"]
    assert Program({"q": "a", "r": "b"}, lambda p, e: 1.0).components == ["q", "r"]


@given(st.dictionaries(st.text(max_size=5), st.text(max_size=5), min_size=1))
def test_prompt_key_ignores_dict_order(prompt: dict[str, str]) -> None:
    reordered = dict(reversed(list(prompt.items())))
    assert prompt_key(prompt) == prompt_key(reordered)
    assert prompt_key(prompt) != prompt_key(str(prompt))


finite = st.floats(allow_nan=False, allow_infinity=False)


@given(
    best=st.one_of(st.text(), st.dictionaries(st.text(), st.text(), min_size=1)),
    scores=st.dictionaries(st.text(max_size=4), finite, max_size=5),
    cost=st.one_of(st.none(), finite),
)
def test_result_json_round_trip_is_exact(
    best: object, scores: dict[str, float], cost: object
) -> None:
    result = OptimizationResult(
        optimizer="test",
        best_prompt=best,  # type: ignore[arg-type]
        best_score=0.5,
        best_candidate=0,
        candidates=[
            Candidate(index=0, prompt=best, val_scores=scores),  # type: ignore[arg-type]
            Candidate(index=1, prompt="x", parents=[0], origin="mutation", found_at_rollout=9),
        ],
        n_rollouts=12,
        max_rollouts=20,
        lm_usage={"reflection": LMUsage(calls=3, cost_usd=cost)},  # type: ignore[arg-type]
        cost_usd=cost,  # type: ignore[arg-type]
        seed=0,
        settings={"minibatch_size": 3, "merge": True, "name": None},
        stop_reason="budget",
        details={"front": [[0, 1]]},
    )
    again = OptimizationResult.from_json(result.to_json())
    assert again == result
    assert again.to_json() == result.to_json()


def test_result_is_frozen_and_strict() -> None:
    result = OptimizationResult(
        optimizer="t",
        best_prompt="p",
        best_score=1.0,
        best_candidate=0,
        candidates=[],
        n_rollouts=0,
        seed=0,
    )
    with pytest.raises(Exception, match="frozen"):
        result.best_score = 2.0  # type: ignore[misc]
    with pytest.raises(Exception, match="extra"):
        OptimizationResult.model_validate({**result.model_dump(), "surprise": 1})


def test_candidate_val_score_is_the_mean() -> None:
    c = Candidate(index=0, prompt="p", val_scores={"0": 1.0, "1": 0.0, "2": 0.5})
    assert math.isclose(c.val_score, 0.5)
    assert Candidate(index=1, prompt="p").val_score == 0.0


def test_lm_usage_adds_and_unknown_cost_stays_unknown() -> None:
    total = LMUsage(calls=1, prompt_tokens=3, cost_usd=0.1) + LMUsage(calls=2, cost_usd=0.2)
    assert total.calls == 3 and math.isclose(total.cost_usd or 0, 0.3)
    assert (LMUsage(cost_usd=None) + LMUsage(cost_usd=1.0)).cost_usd is None
