"""The held-out ``plural`` task: seeded splits, a metric for verbose answers, both feedbacks."""

from __future__ import annotations

import pickle

import pytest

from policyopt import Score
from policyopt.bench.heldout import DEVELOPMENT, side_of
from policyopt.tasks import TASKS, get_task, plural


def _row(noun: str) -> dict[str, object]:
    task = get_task("plural")
    return next(r for r in [*task.train, *task.val, *task.test] if r["word"] == noun)


def test_registered_with_antonyms_sized_splits_over_the_whole_pool() -> None:
    assert "plural" in TASKS and "plural" not in DEVELOPMENT.tasks
    for seed in (0, 101):
        task = get_task("plural", seed)
        assert (len(task.train), len(task.val), len(task.test)) == (38, 38, 40)
        words = sorted(r["word"] for r in [*task.train, *task.val, *task.test])
        assert words == sorted(noun for noun, _ in plural.POOL)
    assert [r["id"] for r in get_task("plural", 101).test] != [
        r["id"] for r in get_task("plural", 0).test
    ]
    task = get_task("plural")
    assert task.kind == "transformation" and task.seed_prompt == "Answer the question."
    assert task.render(task.reference_prompt, _row("cat")).endswith("\n\nInput: cat\nAnswer:")
    assert side_of("plural", 0) == side_of("plural[feedback=bare]", 101) == "heldout"


@pytest.mark.parametrize(
    ("noun", "output"),
    [
        ("cat", "cats"),
        ("cat", 'The plural of the word "cat" is "cats".'),
        ("child", "Children"),
        ("cactus", "cacti"),
        ("cactus", "The plural is cactuses."),
        ("knife", "knives"),
    ],
)
def test_metric_accepts_verbose_and_alternative_right_answers(noun: str, output: str) -> None:
    score = plural.metric(output, _row(noun))
    assert score.score == 1.0 and score.feedback is not None and "Correct" in score.feedback


@pytest.mark.parametrize(
    ("noun", "output"),
    [
        ("cat", "cat"),  # the noun itself
        ("child", "childs"),  # the regular rule on an irregular noun
        ("mouse", "The cat is a feline creature."),
        ("mouse", "mice, like men"),  # names another noun's plural too
        ("city", ""),
    ],
)
def test_metric_rejects_wrong_empty_and_hedged_answers(noun: str, output: str) -> None:
    assert plural.metric(output, _row(noun)).score == 0.0


def test_hint_feedback_states_the_rule_and_bare_feedback_only_the_answer() -> None:
    row = _row("wolf")
    hint = get_task("plural").metric("a wolf", row)
    bare = get_task("plural[feedback=bare]").metric("a wolf", row)
    assert hint.score == bare.score == 0.0
    told = hint.feedback or ""
    assert "'wolves'" in told and "plural form of the noun" in told
    assert bare.feedback == "expected 'wolves', got 'a wolf'"
    hedged = plural.metric("mice or men", _row("mouse"))
    assert "several plurals" in (hedged.feedback or "")


def _answer_plural(text: str) -> str:
    """A fake LM (module level, so it pickles) giving the first accepted plural."""
    noun = text.rsplit("Input: ", 1)[1].split("\n")[0]
    return f"The plural of {noun} is {dict(plural.POOL)[noun][0]}."


def test_program_scores_right_answers_and_pickles() -> None:
    task = get_task("plural", 101)
    program = task.program(_answer_plural)
    scores = [program.evaluate(task.reference_prompt, example) for example in task.test]
    assert all(isinstance(s, Score) and s.score == 1.0 for s in scores)
    clone = pickle.loads(pickle.dumps(program.evaluate))
    assert clone(task.seed_prompt, task.test[0]).score == 1.0
