"""``final_choice``: the best validation mean, or the best lower bound of the gain over the seed."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policyopt import GEPA
from policyopt.choice import final_candidate, gain_lower_bound
from policyopt.errors import ConfigError
from policyopt.testing.conformance import keyword_task

from .test_samples import SeededLM


def _val(*rows: list[float]) -> list[dict[str, float]]:
    return [{f"v{i}": x for i, x in enumerate(row)} for row in rows]


def _agg(val: list[dict[str, float]]) -> dict[int, float]:
    return {c: math.fsum(s.values()) / len(s) for c, s in enumerate(val)}


def test_a_noisy_winner_loses_to_a_steady_one_and_to_the_seed() -> None:
    seed = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
    lucky = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]  # +0.2 mean: 6 up, 4 down, noise
    steady = [1, 1, 0, 0, 0, 0, 1, 1, 1, 1]  # +0.2 mean: 2 up, none down
    val = _val(seed, lucky, steady)
    agg = _agg(val)
    assert final_candidate("mean", val, agg, 1.0) == 1
    assert final_candidate("lower_bound", val, agg, 1.0) == 2
    # without the steady one, the lucky one does not beat the seed by more than noise
    assert final_candidate("lower_bound", val[:2], _agg(val[:2]), 1.0) == 0
    # z = 0 is the mean rule up to ties
    assert final_candidate("lower_bound", val, agg, 0.0) == 1


@pytest.mark.parametrize("n", [2, 8, 12, 30])
def test_a_one_example_win_never_replaces_the_seed(n: int) -> None:
    # one win among ties: at z=1 its bound is exactly 0, and the mean broke the tie for it
    seed = [0.0] * n
    one_win = [1.0] + [0.0] * (n - 1)
    val = _val(seed, one_win)
    assert final_candidate("lower_bound", val, _agg(val), 1.0) == 0
    # scored on one shared example only: no spread, still one example
    partial = [{"v0": 0.0, "v1": 0.0}, {"v0": 1.0}]
    assert final_candidate("lower_bound", partial, {0: 0.0, 1: 1.0}, 1.0) == 0
    two_wins = [1.0, 1.0] + [0.0] * (n - 2)  # the bound is above 0 once n >= 3
    val = _val(seed, two_wins)
    expected = 1 if gain_lower_bound(val[1], val[0], 1.0) > 1e-9 else 0
    assert final_candidate("lower_bound", val, _agg(val), 1.0) == expected


def test_the_bound_is_paired_and_uses_only_shared_examples() -> None:
    seed = {"a": 0.0, "b": 1.0, "c": 0.5}
    assert gain_lower_bound({"a": 1.0, "b": 1.0, "c": 0.5}, seed, 1.0) == pytest.approx(
        1 / 3 - math.sqrt((4 / 9 + 1 / 9 + 1 / 9) / 2 / 3)
    )
    assert gain_lower_bound({"a": 1.0}, seed, 5.0) == 1.0  # one shared example: no spread
    assert gain_lower_bound({"z": 1.0}, seed, 1.0) == 0.0
    with pytest.raises(ValueError, match="final_choice"):
        final_candidate("max", _val([0.0]), {0: 0.0}, 1.0)


@given(
    st.lists(
        st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=6, max_size=6), min_size=1, max_size=8
    ),
    st.floats(0, 3),
)
def test_the_choice_never_has_a_lower_bound_below_the_seeds(rows: list, z: float) -> None:
    val = _val(*rows)
    agg = _agg(val)
    chosen = final_candidate("lower_bound", val, agg, z)
    assert chosen in agg
    bound = gain_lower_bound(val[chosen], val[0], z) if chosen else 0.0
    assert bound >= -1e-12

    def wins(c: int) -> int:
        return sum(v > val[0][k] + 1e-12 for k, v in val[c].items())

    # among the candidates allowed to replace the seed (two examples won at least), none has
    # a better bound than the choice
    eligible = [c for c in agg if c and wins(c) >= 2]
    assert all(gain_lower_bound(val[c], val[0], z) <= bound + 1e-9 for c in eligible)
    if chosen:
        assert wins(chosen) >= 2


def test_gepa_reports_the_rule_and_returns_the_chosen_candidate() -> None:
    program, train, val = keyword_task()
    runs = {}
    for rule in ("mean", "lower_bound"):
        gepa = GEPA(
            reflection_lm=SeededLM(),
            max_rollouts=120,
            seed=1,
            n_jobs=2,
            progress=False,
            merge=False,
            final_choice=rule,  # type: ignore[arg-type]
        )
        runs[rule] = result = gepa.optimize(program, train, val)
        choice = result.details["final_choice"]
        assert choice["rule"] == rule and choice["chosen"] == result.best_candidate
        by_index = {c.index: c for c in result.candidates}
        assert result.best_prompt == by_index[result.best_candidate].prompt
    # the same search; only the returned candidate may differ
    assert [c.prompt for c in runs["mean"].candidates] == [
        c.prompt for c in runs["lower_bound"].candidates
    ]
    assert runs["mean"].best_candidate == runs["mean"].details["final_choice"]["highest_mean"]


def test_an_unknown_rule_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="final_choice"):
        GEPA(reflection_lm=SeededLM(), max_rollouts=10, final_choice="max")  # type: ignore[arg-type]
