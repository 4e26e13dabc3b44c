"""The copy guard: the rule by hand, and GEPA rejecting (and counting) proposals that copy."""

from __future__ import annotations

import re
from typing import Any

import pytest

from policyopt import GEPA, OPRO, Program
from policyopt.gepa.reflection import make_records
from policyopt.guards import COPIES_EXAMPLE, find_copy, instance_strings, quoted
from policyopt.testing import ScriptedLM
from policyopt.types import Score

CAPITALS = [
    ("France", "Paris"),
    ("Japan", "Tokyo"),
    ("Kenya", "Nairobi"),
    ("Peru", "Lima"),
    ("Canada", "Ottawa"),
    ("Egypt", "Cairo"),
    ("Chile", "Santiago"),
    ("Norway", "Oslo"),
]


def _examples(prefix: str) -> list[dict[str, str]]:
    return [{"id": f"{prefix}{i}", "country": c, "answer": a} for i, (c, a) in enumerate(CAPITALS)]


def _records(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    rows = [
        ({"id": "x", "country": c, "answer": a}, "unsure", 0.0, f"Wrong: expected {a!r}.")
        for c, a in pairs
    ]
    return make_records(rows)


def test_quoted_strings_and_instance_strings() -> None:
    assert quoted("""say "Paris", 'hot', `x y`, “curly” but not don't or it's""") == [
        "Paris",
        "hot",
        "x y",
        "curly",
    ]
    record = _records(("France", "Paris"))[0]
    assert instance_strings(record) == {"france", "paris"}


@pytest.mark.parametrize(
    ("proposal", "copied"),
    [
        ('Name the capital. The provided answer "Paris" is correct.', "paris"),  # quoted answer
        ("Name the capital, e.g. France gives Paris.", "france / paris"),  # input with answer
        ("Name the capital city of the country.", None),  # the rule only
        ("Name the capital; Parisian food is irrelevant.", None),  # not a whole word
        ("Name the capital of France or Japan.", None),  # one string per example, unquoted
        ('Name the capital, as in "Paris is lovely".', None),  # one word in a longer quote
    ],
)
def test_the_rule_by_hand(proposal: str, copied: str | None) -> None:
    records = _records(("France", "Paris"), ("Japan", "Tokyo"))
    assert find_copy(proposal, "Name the capital.", records) == copied


def test_shared_labels_short_strings_and_the_parent_are_not_copies() -> None:
    labels = make_records(
        [
            ({"text": "Bonjour tout le monde", "lang": "French"}, "x", 0.0, "expected 'French'"),
            ({"text": "Merci beaucoup, mon ami", "lang": "French"}, "x", 0.0, "expected 'French'"),
        ]
    )
    assert find_copy('Answer with the language, e.g. "French".', "Say it.", labels) is None
    assert find_copy('Answer "bonjour tout le monde".', "Say it.", labels) is not None
    sums = make_records([({"a": 2, "b": 7, "answer": 9}, "x", 0.0, "expected 9")])
    assert find_copy("Add 2 and 7 to get 9.", "Add.", sums) is None  # under 3 characters
    records = _records(("France", "Paris"))
    assert find_copy('Say "Paris" for France.', 'Say "Paris" for France.', records) is None
    phrase = make_records([({"q": "the quick brown fox jumps"}, "x", 0.0, "no")])
    assert find_copy("Think about the quick brown fox jumps.", "Think.", phrase) is not None


def _evaluate(prompt: Any, example: dict[str, str]) -> Score:
    ok = "capital" in str(prompt).lower()
    answer = example["answer"]
    feedback = None if ok else f"Wrong: expected {answer!r} for {example['country']}."
    return Score(float(ok), feedback=feedback, output=answer if ok else "unsure")


def _reflection(copy: bool) -> ScriptedLM:
    def reflect(text: str) -> str:
        answer = re.findall(r"expected '(\w+)'", text)[0]
        if copy:
            return f'```\nName the capital. The provided answer "{answer}" is correct.\n```'
        return "```\nName the capital city of the country.\n```"

    return ScriptedLM(reflect)


def _run(copy: bool, **settings: Any) -> Any:
    program = Program("Answer the question.", _evaluate)
    return GEPA(
        reflection_lm=_reflection(copy), max_rollouts=60, progress=False, patience=2, **settings
    ).optimize(program, _examples("t"), _examples("v"))


def test_gepa_rejects_and_counts_a_copying_reflection() -> None:
    result = _run(copy=True)
    rejections = result.details["rejections"]
    assert rejections.get(COPIES_EXAMPLE, 0) >= 3  # type: ignore[union-attr]
    assert result.details["counts"]["proposed"] == 0  # type: ignore[index]
    assert result.best_prompt == "Answer the question."
    assert all('"' not in c.prompt for c in result.candidates)


def test_gepa_accepts_a_reflection_that_states_the_rule() -> None:
    result = _run(copy=False)
    assert COPIES_EXAMPLE not in result.details["rejections"]  # type: ignore[operator]
    assert result.best_prompt == "Name the capital city of the country."
    assert result.best_score == 1.0


def test_reject_copies_false_lets_the_copy_through() -> None:
    result = _run(copy=True, reject_copies=False)
    assert COPIES_EXAMPLE not in result.details["rejections"]  # type: ignore[operator]
    assert '"' in str(result.best_prompt) and result.best_score == 1.0


def _meta(copy: bool) -> ScriptedLM:
    def propose(text: str) -> str:
        answers = re.findall(r"expected '(\w+)'", text)
        if copy and answers:
            return f'```\nName the capital. The answer "{answers[0]}" is correct.\n```'
        return "```\nName the capital city of the country.\n```"

    return ScriptedLM(propose)


@pytest.mark.parametrize("copy", [True, False])
def test_opro_rejects_and_counts_a_copying_meta_lm(copy: bool) -> None:
    program = Program("Answer the question.", _evaluate)
    result = OPRO(
        meta_lm=_meta(copy), max_rollouts=60, progress=False, patience=2, minibatch_size=4
    ).optimize(program, _examples("t"), _examples("v"))
    copies = result.details["rejections"].get(COPIES_EXAMPLE, 0)  # type: ignore[union-attr]
    if copy:
        assert copies >= 3 and result.best_prompt == "Answer the question."
    else:
        assert copies == 0 and result.best_prompt == "Name the capital city of the country."
