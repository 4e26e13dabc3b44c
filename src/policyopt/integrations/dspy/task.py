"""A DSPy program as a benchmark task: policyopt's optimizers and DSPy's own (``dspy-gepa``,
``dspy-mipro``) on the same program, data, model and rollout budget.

:func:`dspy_task` makes a :class:`~policyopt.tasks.base.Task` whose program is the DSPy module on
the cell's task model (:attr:`Task.make_program`), its prompt the module's components as JSON
text, and whose :attr:`Task.dspy_program` (:class:`DSPyNative`) is what the DSPy peers compile
natively. Every optimized program is scored on the test split by the same DSPy program.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import dspy

from policyopt.bench.peers._dspy import dspy_lm
from policyopt.errors import ConfigError
from policyopt.integrations.dspy.components import find_components, parse_kinds
from policyopt.integrations.dspy.program import (
    DSPyProgram,
    call_metric,
    example_rows,
    metric_style,
)
from policyopt.tasks.base import Task
from policyopt.types import Program, Score

__all__ = ["DSPyNative", "dspy_task"]


class DSPyNative:
    """What the DSPy peers need to compile the task's program natively, and to score the
    program they compiled (with its demos) on a test row."""

    def __init__(
        self,
        module: Callable[[], dspy.Module],
        metric: Callable[..., Any],
        splits: Mapping[str, Sequence[dspy.Example]],
        adapter: Any,
        kinds: tuple[str, ...],
        lm_kwargs: Mapping[str, Any],
    ) -> None:
        self.module = module
        self.metric = metric
        self.splits = {name: list(examples) for name, examples in splits.items()}
        self.adapter = adapter
        self.kinds = kinds
        self.lm_kwargs = dict(lm_kwargs)

    @property
    def trainset(self) -> list[dspy.Example]:
        return self.splits["train"]

    @property
    def valset(self) -> list[dspy.Example]:
        return self.splits["val"]

    def components(self, module: dspy.Module) -> dict[str, str]:
        """The module's texts by component name (what policyopt's optimizers search)."""
        return {c.name: c.text for c in find_components(module, self.kinds)}

    def score(
        self, gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None
    ) -> Score:
        """The task's metric on one prediction (or, given ``pred_name``, one predictor's step),
        as a policyopt Score."""
        value, feedback = call_metric(
            self.metric, metric_style(self.metric), gold, pred, trace, pred_name, pred_trace
        )
        return Score(value, feedback=feedback)

    def program(self, module: dspy.Module, lm: Any) -> DSPyProgram:
        """``module`` on ``lm`` (a policyopt LM) with the task's adapter, every split known."""
        task_model, _ = dspy_lm(lm, "task", self.lm_kwargs)
        program = DSPyProgram(
            module, self.metric, components=self.kinds, lm=task_model, adapter=self.adapter
        )
        for split, examples in self.splits.items():
            program.rows(examples, split)
        return program

    def scorer(self, module: dspy.Module, lm: Any) -> Callable[[dict[str, Any]], Score]:
        """``row -> Score`` for a compiled module as it is (instructions and demos)."""
        program = self.program(module, lm)
        return lambda row: program.evaluate({}, row)


class _JSONEvaluate:
    """``evaluate``/``run`` that take the prompt as a dict or as its JSON text (the harness
    writes a dict prompt as JSON in its records and scores that text on the test split)."""

    def __init__(self, method: Callable[[Any, Any], Any]) -> None:
        self.method = method

    def __call__(self, prompt: Any, row: Any) -> Any:
        if isinstance(prompt, str) and prompt.lstrip().startswith("{"):
            prompt = json.loads(prompt)
        return self.method(prompt, row)


def dspy_task(
    name: str,
    module: Callable[[], dspy.Module],
    metric: Callable[..., Any],
    trainset: Sequence[dspy.Example],
    valset: Sequence[dspy.Example],
    testset: Sequence[dspy.Example],
    *,
    adapter: Any = None,
    components: str | Iterable[str] = "instructions",
    lm_kwargs: Mapping[str, Any] | None = None,
    description: str = "",
) -> Task:
    """A benchmark :class:`Task` running ``module()`` (a factory: each cell gets a fresh one)
    on the cell's task model with ``adapter``; ``lm_kwargs`` go with every model call."""
    kinds = parse_kinds(components)
    seed_module = module()
    seed = {c.name: c.text for c in find_components(seed_module, kinds)}
    if not seed:
        raise ConfigError(f"DSPy task {name!r}: the module has no {', '.join(kinds)} components.")
    native = DSPyNative(
        module,
        metric,
        {"train": trainset, "val": valset, "test": testset},
        adapter,
        kinds,
        lm_kwargs or {},
    )

    def make_program(lm: Any) -> Program:
        program = native.program(module(), lm)
        evaluate, run = _JSONEvaluate(program.evaluate), _JSONEvaluate(program.run)
        return Program(program.seed, evaluate, run=run)

    def not_a_template(output: str, example: dict[str, Any]) -> Score:
        raise ConfigError(f"Task {name!r} is a DSPy program: its program scores it.")

    text = json.dumps(seed, ensure_ascii=False)
    return Task(
        name=name,
        description=description or f"the DSPy program {type(seed_module).__name__}",
        seed_prompt=text,
        reference_prompt=text,
        train=example_rows(trainset, "train"),
        val=example_rows(valset, "val"),
        test=example_rows(testset, "test"),
        render_input=lambda row: json.dumps({k: v for k, v in row.items() if k != "id"}),
        metric=not_a_template,
        kind="dspy-program",
        lm_kwargs=dict(lm_kwargs or {}),  # the DSPy peers' task model gets them too
        make_program=make_program,
        dspy_program=native,
    )
