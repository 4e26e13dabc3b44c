"""GEPA's reflection sees the data's label set, and a proposal fixing one label is a copy."""

from __future__ import annotations

import re
from typing import Any

import pytest

from policyopt import GEPA
from policyopt.feedback import ADVICE_TEMPLATE, make_records, output_space, output_space_note
from policyopt.gepa.reflection import COMPACT_TEMPLATE, render_prompt
from policyopt.gepa.spec import SMALL_MODEL_SETTINGS
from policyopt.guards import COPIES_EXAMPLE, find_fixed_answer
from policyopt.tasks import get_task
from policyopt.testing import ScriptedLM

LANGUAGES = ["english", "french", "german", "spanish"]


def test_output_space_by_hand() -> None:
    rows = [{"id": str(i), "text": f"s{i}", "label": LANGUAGES[i % 4]} for i in range(12)]
    assert output_space(rows) == LANGUAGES
    assert output_space(get_task("language_id").train) == LANGUAGES
    for free in ("antonyms", "addition", "extract_phone"):  # free-form answers: no label set
        assert output_space(get_task(free).train) == []
    # only an answer field counts: another categorical field may be an input
    rows2 = [{"q": f"q{i}", "topic": "ab"[i % 2], "answer": "xyz"[i % 3]} for i in range(12)]
    assert output_space(rows2) == ["x", "y", "z"]
    rows3 = [{"q": f"q{i}", "need": "ab"[i % 2], "kind": "xyz"[i % 3]} for i in range(12)]
    assert output_space(rows3) == []
    assert output_space(rows[:3]) == []  # too few examples to tell
    assert output_space_note(["a"]) == ""


@pytest.mark.parametrize(
    ("proposal", "fixed"),
    [
        ("Answer French.", "french"),
        ("Reply with the word French only.", "french"),
        ("Say which language the sentence is written in.", None),  # a question, no label
        ("Name the language: English, French, German or Spanish.", None),  # every label
        ("If the sentence is French, say French.", None),  # a condition on the input
        ("Answer the question.", None),
    ],
)
def test_a_fixed_label_by_hand(proposal: str, fixed: str | None) -> None:
    assert find_fixed_answer(proposal, "Answer the question.", LANGUAGES) == fixed


def test_fixed_labels_need_a_label_set_and_a_new_label() -> None:
    assert find_fixed_answer("Answer French.", "x", []) is None
    assert find_fixed_answer("Answer French.", "Answer French now.", LANGUAGES) is None
    assert find_fixed_answer("Answer yes.", "x", ["yes", "no"]) == "yes"
    assert find_fixed_answer("Answer yes or no.", "x", ["yes", "no"]) is None
    assert find_fixed_answer("Say no more than a word.", "x", ["yes", "no"]) is None  # short


def test_the_label_set_reaches_every_template() -> None:
    records = make_records([({"sentence": "Hola"}, "x", 0.0, "expected Spanish, got 'x'")])
    note = output_space_note(LANGUAGES)
    assert note.endswith("english, french, german, spanish.")
    for template in (ADVICE_TEMPLATE, COMPACT_TEMPLATE, "{current}{records} | {outputs}"):
        text = render_prompt(template, "prompt", "Answer.", records, outputs=LANGUAGES)
        assert text.count(note) == 1
        assert note not in render_prompt(template, "prompt", "Answer.", records)


def _task_lm(task: Any) -> ScriptedLM:
    """Names the sentence's language when asked for the language; else one label it is told."""
    truth = {e["sentence"]: e["label"] for e in (*task.train, *task.val, *task.test)}

    def answer(text: str) -> str:
        prompt, _, tail = text.rpartition("\n\nInput: ")
        sentence = tail.removesuffix("\nAnswer:")
        if "language" in prompt.lower():
            return truth[sentence].capitalize()
        named = [lang for lang in LANGUAGES if lang in prompt.lower()]
        return named[0].capitalize() if named else "I am not sure."

    return ScriptedLM(answer)


def _reflection() -> ScriptedLM:
    """Copies the answer the feedback names most (a collapse) unless told that was rejected;
    then, given the label set, states the rule."""

    def reflect(text: str) -> str:
        labels = re.search(r"answers seen in the data are: ([a-z, ]+)\.", text)
        if "rejected" in text and labels:
            return f"Name the language of the sentence ({labels.group(1)})."
        expected = re.findall(r"expected (\w+), got", text)
        return f"Answer {max(sorted(set(expected)), key=expected.count)}."

    return ScriptedLM(reflect)


def _optimize() -> Any:
    task = get_task("language_id[feedback=bare]", seed=0)
    optimizer = GEPA(
        reflection_lm=_reflection(),
        max_rollouts=160,
        progress=False,
        seed=0,
        **SMALL_MODEL_SETTINGS,
    )
    return optimizer.optimize(task.program(_task_lm(task)), task.train, task.val)


def test_the_small_model_preset_does_not_collapse_to_one_label(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = _optimize()
    assert result.details["rejections"].get(COPIES_EXAMPLE, 0) >= 1  # type: ignore[union-attr]
    for candidate in result.candidates:
        assert find_fixed_answer(str(candidate.prompt), "", LANGUAGES) is None
    assert str(result.best_prompt).startswith("Name the language of the sentence (english")
    assert result.best_score == 1.0
    # without the label set (as before): the same reflection collapses to one label
    monkeypatch.setattr("policyopt.gepa.optimizer.output_space", lambda examples: [])
    blind = _optimize()
    assert find_fixed_answer(str(blind.best_prompt), "", LANGUAGES) is not None
    assert COPIES_EXAMPLE not in blind.details["rejections"]  # type: ignore[operator]
