"""Bare feedback: every built-in task can say only ``expected X, got Y``, with the same scores."""

from __future__ import annotations

import pickle
import re

import pytest
from typer.testing import CliRunner

from policyopt.bench.records import BenchSettings
from policyopt.bench.runner import resolve_task
from policyopt.cli import app
from policyopt.cli.demo import _demo_task
from policyopt.errors import ConfigError
from policyopt.tasks import TASKS, get_task, split_task_name

#: words of the hint feedback that state or point at the rule (none may reach bare feedback)
HINTS = re.compile(
    r"\b(tell|assistant|opposite|rule|language|written|phone|number|email|sum|add|several|"
    r"must|exactly|only|correct|wrong|do not|list|prompt|example|candidates?|plurals?|noun)\b",
    re.IGNORECASE,
)


def _french(text: str) -> str:
    return "French"


def _outputs(task_name: str, example: dict[str, object], expected: str) -> list[str]:
    first = expected.split(" or ")[0].strip("'")
    return [
        first,  # right
        f"The answer is {first}.",  # right, verbose
        "",  # nothing
        "I do not know",  # wrong
        f"{first} or maybe something else, like 12 or French",  # hedged
        "cold, hot, warm",
        "English, French, Spanish or German",
        "555-0000 and a@b.c",
        "3 + 4 = 7",
    ]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_bare_feedback_names_only_the_expected_and_the_output(name: str) -> None:
    hint, bare = get_task(name, seed=0), get_task(name, seed=0, feedback="bare")
    assert bare.name == f"{name}[feedback=bare]" and bare.expected is not None
    assert [e["id"] for e in bare.test] == [e["id"] for e in hint.test]
    rule_in_hint = 0
    for example in [*hint.train, *hint.val, *hint.test]:
        expected = bare.expected(example)
        assert not HINTS.search(expected), expected
        for output in _outputs(name, example, expected):
            told, plain = hint.metric(output, example), bare.metric(output, example)
            assert plain.score == told.score  # same scores: only the words change
            assert plain.feedback is not None and told.feedback is not None
            said = repr(" ".join(output.split())[:80])
            assert plain.feedback == f"expected {expected}, got {said}"
            rule_in_hint += bool(HINTS.search(told.feedback))
    assert rule_in_hint > 0  # the default (hint) feedback is unchanged: it still states it


def test_task_names_carry_the_feedback_kind() -> None:
    assert split_task_name("antonyms") == ("antonyms", "hint")
    assert split_task_name("antonyms[feedback=bare]") == ("antonyms", "bare")
    assert get_task("antonyms").metric is get_task("antonyms", feedback="hint").metric
    assert get_task("addition[feedback=bare]").name == "addition[feedback=bare]"
    for bad in ("antonyms[feedback=loud]", "antonyms[color=bare]", "antonyms[feedback=bare"):
        with pytest.raises(ConfigError):
            get_task(bad)
    for named, given in (("bare", "hint"), ("hint", "bare")):
        with pytest.raises(ConfigError, match="choose one"):
            get_task(f"antonyms[feedback={named}]", feedback=given)
    # the harness: a task option in the name, one canonical spelling per task
    settings = BenchSettings(
        tasks=["antonyms[ feedback = bare ]", "addition[feedback=hint]"], optimizers=["gepa"]
    )
    assert settings.tasks == ["antonyms[feedback=bare]", "addition"]
    task = resolve_task("antonyms[feedback=bare]", limit=3)
    assert task.name == "antonyms[feedback=bare]" and len(task.test) == 3
    assert task.metric("x", task.test[0]).feedback.startswith("expected ")  # type: ignore[union-attr]
    task = get_task("language_id[feedback=bare]")  # Dask cells send programs to workers
    program = pickle.loads(pickle.dumps(task.program(_french)))
    score = program.evaluate(task.seed_prompt, task.test[0])
    assert score.feedback == f"expected {task.test[0]['label'].capitalize()}, got 'French'"


def test_demo_takes_feedback_bare() -> None:
    assert _demo_task("language_id", "bare").name == "language_id[feedback=bare]"
    assert _demo_task("language_id").name == "language_id"
    result = CliRunner().invoke(app, ["demo", "--feedback", "loud", "--budget", "300"])
    assert result.exit_code != 0 and "--feedback 'loud'" in result.output
