"""MIPRO's ``advice`` instruction proposer: instructions restated from the metric's feedback."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from policyopt import MIPRO, Program, Score
from policyopt.testing import ScriptedLM


def task() -> tuple[Program, list[dict[str, str]], list[dict[str, str]]]:
    """The prompt must say "capitals"; the feedback says so, beside one example's details."""

    def evaluate(prompt: str, example: dict[str, str]) -> Score:
        if "capitals" in prompt.lower():
            return Score(1.0)
        return Score(
            0.0,
            feedback=f"Wrong: expected {example['word'].upper()!r} for {example['word']!r}. "
            "Tell the assistant to answer in capitals.",
        )

    words = ["apple", "river", "stone", "cloud", "maple", "tiger", "piano", "lemon"]
    train = [{"id": f"t{i}", "word": w} for i, w in enumerate(words)]
    val = [{"id": f"v{i}", "word": w + "s"} for i, w in enumerate(words)]
    return Program("Answer.", evaluate), train, val


def test_the_advice_proposer_restates_the_shared_feedback_and_finds_the_rule() -> None:
    prompts: list[str] = []

    def answer(text: str) -> str:
        prompts.append(text)
        if "copies the example" in text:
            return "Always answer in capitals.\nThen explain why."
        return 'Say "APPLE" for "apple".\nmore'  # copies an example: rejected, asked again

    result = MIPRO(
        proposer_lm=ScriptedLM(answer),
        max_rollouts=120,
        instruction_proposer="advice",
        max_labeled_demos=0,
        progress=False,
        seed=3,
    ).optimize(*task())
    assert prompts, "the proposer was never asked"
    assert not any("describe what this dataset" in p for p in prompts)  # no summary call
    first = prompts[0]
    assert first.startswith('An assistant followed the instruction "Answer."')
    # only the sentence the failures share, not one example's details
    assert "Tell the assistant to answer in capitals." in first and "expected" not in first
    assert result.details["instructions"] == {"prompt": ["Answer.", "Always answer in capitals."]}
    assert result.best_prompt == "Always answer in capitals." and result.best_score == 1.0
    assert result.details["rejected_proposals"] >= 1


def test_advice_without_bootstrap_runs_warns_and_searches_demos_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lm = ScriptedLM(lambda text: "Answer in capitals.")
    with caplog.at_level(logging.WARNING, logger="policyopt"):
        result = MIPRO(
            proposer_lm=lm,
            max_rollouts=120,
            instruction_proposer="advice",
            demo_bootstrapper="none",
            progress=False,
        ).optimize(*task())
    assert "no bootstrap runs to read feedback from" in caplog.text
    assert result.details["instructions"] == {"prompt": ["Answer."]}


def test_advice_is_a_known_name_and_a_typo_is_a_clear_error() -> None:
    from policyopt.errors import ConfigError

    MIPRO(proposer_lm=ScriptedLM(lambda t: "x"), max_rollouts=200, instruction_proposer="advice")
    with pytest.raises(ConfigError, match="grounded, advice"):
        kwargs: dict[str, Any] = {"instruction_proposer": "advise"}
        MIPRO(proposer_lm=ScriptedLM(lambda t: "x"), max_rollouts=200, **kwargs)


def test_final_choice_lower_bound_keeps_the_seed_against_a_win_by_noise() -> None:
    """A proposal that wins on validation by one example of eight (and loses another) does
    not replace the seed under ``final_choice="lower_bound"``; under the mean it does."""

    def evaluate(prompt: str, example: dict[str, str]) -> Score:
        n = int(example["id"][1:])
        if prompt == "Answer.":
            return Score(1.0 if n in (0, 1) else 0.0)
        return Score(1.0 if n in (1, 2, 3) else 0.0)  # +2 -1: mean 0.375 vs 0.25

    train = [{"id": f"t{i}", "word": str(i)} for i in range(8)]
    val = [{"id": f"v{i}", "word": str(i)} for i in range(8)]
    chosen = {}
    for rule in ("mean", "lower_bound"):
        result = MIPRO(
            proposer_lm=ScriptedLM(lambda text: "Answer well."),
            max_rollouts=120,
            instruction_proposer="advice",
            max_labeled_demos=0,
            progress=False,
            final_choice=rule,  # type: ignore[arg-type]
        ).optimize(Program("Answer.", evaluate), train, val)
        chosen[rule] = result.best_prompt
        assert result.details["final_choice"]["rule"] == rule  # type: ignore[index]
    assert chosen == {"mean": "Answer well.", "lower_bound": "Answer."}


def test_advice_proposals_survive_the_fault_suite(tmp_path: Path) -> None:
    """Garbage, huge, surrogate, non-str, raising and 429 proposer answers, flaky and hanging
    evaluate: the advice proposer ends with a valid result or a clear stop, like the grounded;
    a resumed run pays nothing again, and a seed gives the same run twice."""
    from policyopt.testing.conformance import Conformance

    from .test_mipro import factory

    suite = Conformance(
        lambda **kw: factory(instruction_proposer="advice", **kw),
        budget=150,
        lm_name="proposer_lm",
    )
    suite.check_faults(tmp_path)
    (tmp_path / "resume").mkdir()
    suite.check_resume_spends_nothing(tmp_path / "resume")
    suite.check_determinism()
