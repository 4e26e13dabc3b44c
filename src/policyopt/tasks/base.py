"""What a built-in task is: data with fixed splits, a prompt template, a metric with feedback.

A task turns into a :class:`policyopt.Program` for a given LM: ``evaluate`` renders the prompt and
the example into one user message, asks the LM and scores the answer with the task's metric.

Feedback comes in two kinds (:func:`with_feedback`): ``hint``, the task's own (it states the rule,
e.g. "tell the assistant to give the opposite of the word"), and ``bare``, only
``expected X, got Y`` with the same scores, so an optimizer must find the rule itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from policyopt.errors import ConfigError
from policyopt.lm.base import LM
from policyopt.types import Program, Score

__all__ = ["FEEDBACK_KINDS", "BareMetric", "Task", "with_feedback"]

#: the kinds of metric feedback a built-in task gives (``hint`` is the default)
FEEDBACK_KINDS = ("hint", "bare")


@dataclass(frozen=True)
class Task:
    """A dataset with seeded train/val/test splits, a program template and a metric."""

    name: str
    description: str
    seed_prompt: str
    reference_prompt: str
    train: Sequence[dict[str, Any]]
    val: Sequence[dict[str, Any]]
    test: Sequence[dict[str, Any]]
    render_input: Callable[[dict[str, Any]], str]
    metric: Callable[[str, dict[str, Any]], Score]
    template: str = "{prompt}\n\n{input}"
    notes: str = ""
    lm_kwargs: dict[str, Any] = field(default_factory=dict)
    #: what sort of task: "classification", "extraction", "math", "transformation", ...
    kind: str = ""
    #: the expected answer of an example as text (what bare feedback names); None: unknown
    expected: Callable[[dict[str, Any]], str] | None = None
    #: a task whose program is more than a prompt template (a DSPy program): ``lm -> Program``.
    #: Its prompt is a dict of named components; ``seed_prompt`` and records hold it as JSON
    #: text, which the program's ``evaluate`` also takes.
    make_program: Callable[[Any], Program] | None = None
    #: what the DSPy peers compile natively for such a task (module factory, metric, examples,
    #: adapter): built by :func:`policyopt.integrations.dspy.dspy_task`; None for a template task
    dspy_program: Any = None

    def render(self, prompt: str, example: dict[str, Any]) -> str:
        """The user message the LM sees for ``prompt`` on ``example``."""
        return self.template.format(prompt=prompt.strip(), input=self.render_input(example))

    def split(self, name: str) -> Sequence[dict[str, Any]]:
        """One split by name: ``"train"``, ``"val"`` or ``"test"``."""
        splits = {"train": self.train, "val": self.val, "test": self.test}
        if name not in splits:
            from policyopt.errors import ConfigError

            raise ConfigError(f"Unknown split {name!r}; choose one of {sorted(splits)}.")
        return splits[name]

    def program(self, lm: Callable[..., str]) -> Program:
        """The task's program on ``lm`` (any text-in, text-out callable), seeded with
        :attr:`seed_prompt` (:attr:`make_program`'s own when it has one)."""
        if self.make_program is not None:
            return self.make_program(lm)
        return Program(self.seed_prompt, _Evaluate(self, lm), run=_Run(self, lm))


class _Run:
    """``run(prompt, example)``: the program's raw output (picklable, unlike a lambda)."""

    def __init__(self, task: Task, lm: Callable[..., str]) -> None:
        self.task = task
        self.lm = lm

    def __call__(self, prompt: str, example: dict[str, Any]) -> str:
        text = self.task.render(prompt, example)
        if self.task.lm_kwargs and isinstance(self.lm, LM):
            return self.lm(text, **self.task.lm_kwargs)
        return self.lm(text)  # a plain callable takes the text only


class _Evaluate(_Run):
    """``evaluate(prompt, example)``: run the program and score its output with the metric."""

    def __call__(self, prompt: str, example: dict[str, Any]) -> Score:  # type: ignore[override]
        output = super().__call__(prompt, example)
        return self.task.metric(output, example)


class BareMetric:
    """A metric's scores with feedback cut to ``expected X, got Y`` (picklable)."""

    def __init__(
        self,
        metric: Callable[[str, dict[str, Any]], Score],
        expected: Callable[[dict[str, Any]], str],
    ) -> None:
        self.metric = metric
        self.expected = expected

    def __call__(self, output: str, example: dict[str, Any]) -> Score:
        score = self.metric(output, example)
        said = repr(" ".join(str(output).split())[:80])
        feedback = f"expected {self.expected(example)}, got {said}"
        return Score(score.score, feedback=feedback, output=output)


def with_feedback(task: Task, kind: str) -> Task:
    """``task`` with ``hint`` (its own, unchanged) or ``bare`` feedback; the bare task's name
    is ``<name>[feedback=bare]`` so its results never mix with the hint task's."""
    if kind == "hint":
        return task
    if kind != "bare":
        raise ConfigError(f"Unknown feedback {kind!r}; choose one of {', '.join(FEEDBACK_KINDS)}.")
    if task.expected is None:
        raise ConfigError(f"Task {task.name!r} does not name its expected answers (bare feedback).")
    return dataclasses.replace(
        task, name=f"{task.name}[feedback=bare]", metric=BareMetric(task.metric, task.expected)
    )
