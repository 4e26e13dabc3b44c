"""MIPRO with a scripted proposer LM: search, bootstrapping, presets, conformance."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from policyopt import MIPRO, Program, Score
from policyopt.errors import ConfigError
from policyopt.ledger import with_lm_cap
from policyopt.mipro import estimate_rollouts, preset
from policyopt.mipro.config import MIPROSettings
from policyopt.mipro.demos import Demo, build_demo_sets, detect_label_key, format_prompt
from policyopt.testing.conformance import CHECKS, Conformance, CountingEvaluate, keyword_task
from policyopt.testing.scripted import BEST
from policyopt.testing.scripted import keyword_proposer_lm as proposer

pytestmark = pytest.mark.waits  # see tests/conftest.py


def mipro(**kwargs: Any) -> MIPRO:
    kwargs.setdefault("proposer_lm", proposer())
    kwargs.setdefault("max_rollouts", 400)
    if "auto" not in kwargs:
        kwargs.setdefault("num_candidates", 5)
        kwargs.setdefault("num_trials", 12)
    kwargs.setdefault("minibatch_size", 6)
    return MIPRO(progress=False, **kwargs)


def test_finds_the_clearly_best_instruction_within_budget() -> None:
    evaluate = CountingEvaluate()
    program, train, val = keyword_task(evaluate=evaluate)
    result = mipro().optimize(program, train, val)
    assert result.best_prompt == BEST and result.best_score == 1.0
    assert result.n_rollouts == evaluate.total <= 400
    assert result.candidates[0].origin == "seed" and result.candidates[0].val_score == 0.0
    instructions = result.details["instructions"]["prompt"]  # type: ignore[index]
    assert instructions[0] == "Solve the task." and BEST in instructions
    assert len(set(instructions)) == len(instructions)


def labeled_task(
    threshold_scores: dict[str, float],
) -> tuple[Program, list[dict[str, str]], list[dict[str, str]]]:
    """Examples with an 'answer' label; evaluate scores by a fixed table and echoes an output."""

    def evaluate(prompt: str, example: dict[str, str]) -> Score:
        return Score(threshold_scores[example["q"]], output=f"out-{example['q']}")

    train = [{"q": q, "answer": f"a-{q}"} for q in threshold_scores]
    return Program("Answer.", evaluate), train, train


def test_bootstraps_only_examples_that_pass_the_threshold() -> None:
    scores = {
        "x1": 1.0,
        "x2": 0.4,
        "x3": 0.0,
        "x4": 0.9,
        "x5": 1.0,
        "x6": 0.2,
        "x7": 0.0,
        "x8": 0.1,
    }
    for threshold, passing in [(None, {"x1", "x5"}), (0.5, {"x1", "x4", "x5"}), (0.0, set(scores))]:
        program, train, val = labeled_task(scores)
        result = mipro(
            metric_threshold=threshold,
            max_labeled_demos=0,
            max_bootstrapped_demos=8,
            num_candidates=3,
            num_trials=2,
        ).optimize(program, train, val)
        assert result.details["bootstrapped_demos"] == len(passing), threshold
        demo_prompts = [c.prompt for c in result.candidates]
        for prompt in demo_prompts:
            assert isinstance(prompt, str)
            for q in scores:
                if f"Output: out-{q}" in prompt:
                    assert q in passing


def test_labeled_only_and_zero_shot_modes_work() -> None:
    scores = {f"x{i}": 0.0 for i in range(8)}
    program, train, val = labeled_task(scores)
    labeled = mipro(
        max_bootstrapped_demos=0, max_labeled_demos=2, num_candidates=3, num_trials=4
    ).optimize(program, train, val)
    assert labeled.details["label_key"] == "answer"
    assert labeled.details["demo_set_sizes"] == [0, 2]
    zero = mipro(
        max_bootstrapped_demos=0, max_labeled_demos=0, num_candidates=3, num_trials=4
    ).optimize(program, train, val)
    assert zero.details["demo_set_sizes"] == [0]
    assert all("Examples:" not in str(c.prompt) for c in zero.candidates)


def test_demos_enter_the_prompt_through_a_replaceable_formatter() -> None:
    assert format_prompt("Do it.", []) == "Do it."
    assert (
        format_prompt("Do it.", [Demo("in", "out")])
        == "Do it.\n\nExamples:\n\nInput: in\nOutput: out"
    )
    scores = {f"x{i}": 1.0 for i in range(8)}
    program, train, val = labeled_task(scores)

    def bracket(instruction: str, demos: Any) -> str:
        return instruction + "".join(f" [{d.input}=>{d.output}]" for d in demos)

    # every answer scores 1.0 (all bootstrapped): the seed solves the valset, search anyway
    result = mipro(
        demo_formatter=bracket, num_candidates=3, num_trials=6, stop_at_perfect=False
    ).optimize(program, train, val)
    assert any("=>" in str(c.prompt) for c in result.candidates) or result.details["trials"]


def test_demo_sets_are_distinct_and_bounded() -> None:
    import random

    boot = [Demo(f"b{i}", "o") for i in range(6)]
    lab = [Demo(f"l{i}", "o") for i in range(6)]
    sets = build_demo_sets(6, boot, lab, max_bootstrapped=3, max_labeled=4, rng=random.Random(0))
    assert sets[0] == [] and len(sets[1]) == 4 and all(d in lab for d in sets[1])
    assert len({tuple(s) for s in sets}) == len(sets) <= 6
    assert all(sum(d in boot for d in s) <= 3 and len(s) <= 4 for s in sets[2:])
    assert detect_label_key([{"q": 1, "label": 2}, {"q": 2, "label": 3}]) == "label"
    assert detect_label_key([{"q": 1}]) is None


@pytest.mark.parametrize("auto", ["light", "medium", "heavy"])
def test_presets_follow_the_written_formula_and_bound_the_real_spend(auto: str) -> None:
    n = {"light": 6, "medium": 12, "heavy": 18}[auto]
    assert preset(auto, 1, False) == (n, int(max(2 * 2 * math.log2(n), 1.5 * n)))
    assert preset(auto, 2, True) == (n, int(max(2 * 2 * math.log2(n), 1.5 * n)))
    evaluate = CountingEvaluate()
    program, train, val = keyword_task(evaluate=evaluate)
    # the whole planned search (a perfect score would end it below the bound it checks)
    optimizer = mipro(auto=auto, max_rollouts=10_000, stop_at_perfect=False)
    result = optimizer.optimize(program, train, val)
    estimate = estimate_rollouts(optimizer.settings, len(train), len(val), 1)
    assert result.details["estimate"] == with_lm_cap(estimate, None)  # as announced
    # the estimate is an upper bound (cache hits lower the spend), and not a loose one
    assert estimate["total"] / 3 <= evaluate.total <= estimate["total"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"auto": "light", "num_trials": 5}, "either auto"),
        ({"auto": "extreme", "num_candidates": None, "num_trials": None}, "auto"),
        ({"minibatch_size": 0}, "minibatch_size"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        mipro(**kwargs)


def test_settings_model_rejects_bad_demo_counts() -> None:
    with pytest.raises(ValueError, match="max_bootstrapped_demos"):
        MIPROSettings(max_rollouts=10, num_candidates=2, num_trials=2, max_bootstrapped_demos=-1)


def factory(**kwargs: Any) -> MIPRO:
    kwargs.setdefault("proposer_lm", proposer())
    return mipro(num_candidates=4, num_trials=8, **kwargs)


SUITE = Conformance(factory, budget=150, lm_name="proposer_lm")


@pytest.mark.parametrize("check", CHECKS)
def test_conformance(check: str, tmp_path: Path) -> None:
    SUITE.run(check, tmp_path)


def test_trials_for_budget_is_the_largest_plan_that_fits() -> None:
    from policyopt.mipro import trials_for_budget

    common = {"num_candidates": 4, "minibatch_size": 10}
    trials = trials_for_budget(300, 38, 39, **common)
    fits = MIPROSettings(max_rollouts=300, num_trials=trials, **common)
    over = MIPROSettings(max_rollouts=300, num_trials=trials + 1, **common)
    assert estimate_rollouts(fits, 38, 39, 1)["total"] <= 300 and not fits.plan(38, 39).notes
    # one more trial: the plan says the budget cannot pay for it (its total is capped at 300)
    assert "the budget pays for about" in over.plan(38, 39).notes[0]


def test_proposals_see_the_seed_score_and_failures_are_counted_per_trial() -> None:
    lm = proposer()
    evaluate = CountingEvaluate(fail_on={"beta"})
    program, train, val = keyword_task(evaluate=evaluate)
    result = mipro(proposer_lm=lm, max_errors=None).optimize(program, train, val)
    proposals = [p for p in lm.prompts if "Instructions already proposed" in p]
    assert proposals and all("Solve the task. (validation score 0.00)" in p for p in proposals)
    trials = result.details["trials"]
    assert all(t["failed"] >= 0 for t in trials)  # type: ignore[union-attr,index]
    assert sum(t["failed"] for t in trials) > 0  # type: ignore[union-attr,index,misc]
    assert result.details["failed_rollouts"] > 0  # every failure is also counted run-wide
