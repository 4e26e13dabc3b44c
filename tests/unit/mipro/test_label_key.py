"""MIPRO without ``label_key``: the answer field is inferred when one field is obviously it (the
one that is not an input name), told in a warning, and never shown in a demo's input; when no
field is obvious a warning names ``label_key``."""

from __future__ import annotations

import logging

import pytest

from policyopt import MIPRO, Program, Score
from policyopt.mipro.demos import detect_label_key
from policyopt.testing import ScriptedLM

PLURALS = [("foot", "feet"), ("mouse", "mice"), ("child", "children"), ("tooth", "teeth")]
PLURALS += [("goose", "geese"), ("man", "men"), ("ox", "oxen"), ("die", "dice")]


def test_the_plural_is_the_label_and_stays_out_of_demo_inputs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = [{"id": n, "noun": n, "plural": p} for n, p in PLURALS]

    def evaluate(prompt: str, example: dict[str, str]) -> Score:
        return Score(1.0, output=example["plural"])  # every seed answer passes: bootstrapped

    proposer = ScriptedLM(lambda text: "```\nGive the plural.\n```")
    with caplog.at_level(logging.WARNING, logger="policyopt"):
        result = MIPRO(
            proposer_lm=proposer,
            max_rollouts=60,
            num_candidates=3,
            num_trials=3,
            minibatch_size=4,
            stop_at_perfect=False,  # the seed already scores 1.0: search the demo sets anyway
            progress=False,
        ).optimize(Program("Answer.", evaluate), data[:4], data[4:])
    assert result.details["label_key"] == "plural"
    assert "using 'plural'" in caplog.text and "label_key=" in caplog.text
    demos = [str(c.prompt) for c in result.candidates if "Input:" in str(c.prompt)]
    assert demos, "no demo set was tried"
    for prompt in demos:
        for line in prompt.splitlines():
            if line.startswith("Input: "):  # the noun alone, never {"noun": ..., "plural": ...}
                assert "plural" not in line and line.removeprefix("Input: ") in dict(PLURALS)


def test_no_obvious_answer_field_is_a_warning_naming_label_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="policyopt"):
        assert detect_label_key([{"id": 1, "english": "dog", "french": "chien"}]) is None
    assert "label_key='...'" in caplog.text and "english, french" in caplog.text
    assert detect_label_key([{"word": "up", "opposite": "down"}]) == "opposite"
    assert detect_label_key([{"q": 1, "answer": 2}]) == "answer"
