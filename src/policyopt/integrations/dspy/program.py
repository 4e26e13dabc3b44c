"""A DSPy module and metric as a policyopt :class:`~policyopt.Program` with named components.

``evaluate(prompt, example)`` writes the prompt's texts into a fresh copy of the module (one per
rollout: rollouts run in parallel threads), runs it on the example's inputs under the DSPy
settings captured when the program was made (LM, adapter), records DSPy's trace, and scores the
prediction with the user's metric. The feedback the optimizer's reflection reads holds the
metric's feedback, the feedback it gives each predictor (a GEPA-style metric called with
``pred_name``/``pred_trace``, as ``dspy.GEPA`` calls it), and the whole trajectory: every
predictor call in order, with its inputs and outputs.
"""

from __future__ import annotations

import inspect
import json
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import dspy

from policyopt.errors import ConfigError, DatasetError, ScoreTypeError, describe
from policyopt.integrations.dspy.components import (
    Component,
    apply_components,
    find_components,
    parse_kinds,
)
from policyopt.types import Program, Score

__all__ = ["DSPyProgram", "call_metric", "example_rows", "metric_style", "to_score"]

#: each input or output value shown in the trajectory is cut to this many characters
VALUE_CHARS = 300


def metric_style(metric: Callable[..., Any]) -> str:
    """``"gepa"`` for a metric taking ``(gold, pred, trace, pred_name, pred_trace)``, ``"plain"``
    for ``(example, pred[, trace])``; a ConfigError for anything that cannot take two."""
    if not callable(metric):
        raise ConfigError(
            "The 'metric' parameter must be callable as metric(example, prediction, trace=None); "
            f"got {describe(metric)} instead."
        )
    try:
        params = inspect.signature(metric).parameters
    except (TypeError, ValueError):  # a builtin without a signature: assume the plain form
        return "plain"
    names = set(params)
    kinds = [p.kind for p in params.values()]
    if "pred_name" in names or inspect.Parameter.VAR_KEYWORD in kinds:
        return "gepa"
    positional = [
        p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if inspect.Parameter.VAR_POSITIONAL in kinds or len(positional) >= 5:
        return "gepa"
    if len(positional) < 2:
        raise ConfigError(
            "The 'metric' must take (example, prediction, trace=None) or dspy.GEPA's (gold, pred, "
            f"trace, pred_name, pred_trace); {getattr(metric, '__name__', metric)!r} takes "
            f"{len(positional)} positional argument(s)."
        )
    return "plain"


def to_score(value: Any) -> tuple[float, str | None]:
    """A metric's answer as ``(score, feedback)``: a number, a bool, or an object with ``score``
    and ``feedback`` (``dspy.Prediction(score=..., feedback=...)``, a dict, a policyopt Score)."""
    if isinstance(value, Score):
        return value.score, value.feedback
    if isinstance(value, bool | numbers.Real):
        return float(value), None
    if isinstance(value, Mapping) or hasattr(value, "score"):
        get = value.get if hasattr(value, "get") else (lambda k, d=None: getattr(value, k, d))
        score, feedback = get("score"), get("feedback")
        text_or_none = feedback is None or isinstance(feedback, str)
        if isinstance(score, bool | numbers.Real) and text_or_none:
            return float(score), feedback
    raise ScoreTypeError(
        "A DSPy metric must return a number, a bool or dspy.Prediction(score=..., feedback=...); "
        f"got {describe(value)} instead."
    )


def call_metric(
    metric: Callable[..., Any],
    style: str,
    example: Any,
    prediction: Any,
    trace: Any = None,
    pred_name: Any = None,
    pred_trace: Any = None,
) -> tuple[float, str | None]:
    """Call a metric of ``style`` (:func:`metric_style`); its answer as ``(score, feedback)``.
    An exception says which metric raised what (the rollout fails with that reason)."""
    try:
        if style == "gepa":
            value = metric(example, prediction, trace, pred_name, pred_trace)
        else:
            value = metric(example, prediction, trace)
    except Exception as exc:
        name = getattr(metric, "__name__", type(metric).__name__)
        raise RuntimeError(f"The metric {name} raised {type(exc).__name__}: {exc}") from exc
    return to_score(value)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(str(text).split())
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 3] + "..."


def _outputs(prediction: Any) -> dict[str, Any]:
    if isinstance(prediction, dspy.Prediction):
        return dict(prediction.items())
    if isinstance(prediction, Mapping):
        return dict(prediction)
    return {"output": prediction}


def example_rows(examples: Sequence[Any], split: str) -> list[dict[str, Any]]:
    """``dspy.Example``s as policyopt rows: the inputs and an id ``"<split>/<index>"``; what the
    reflection is shown (labels stay in the examples)."""
    name = "trainset" if split == "train" else f"{split}set"
    if isinstance(examples, str | bytes) or not isinstance(examples, Sequence):
        raise DatasetError(
            f"The {name!r} must be a list of dspy.Example; got {describe(examples)} instead."
        )
    if not examples:
        raise DatasetError(f"The {name!r} is empty; pass at least one dspy.Example.")
    rows = []
    for index, example in enumerate(examples):
        if not isinstance(example, dspy.Example):
            raise DatasetError(
                f"Example {index} of the {name!r} is {describe(example)}, not a dspy.Example."
            )
        if not example._input_keys:
            raise DatasetError(
                f"Example {index} of the {name!r} names no inputs: build it with "
                "dspy.Example(...).with_inputs('question', ...)."
            )
        ident = f"{split}/{index}"
        rows.append({**example.inputs().toDict(), "id": ident})
    return rows


class DSPyProgram:
    """A ``dspy.Module`` and a DSPy metric, seen by policyopt as a dict-prompt :class:`Program`.

    ``components`` picks what is optimizable (:data:`COMPONENT_KINDS`); ``lm`` and ``adapter``
    are the DSPy LM and adapter the module runs with (default: those of ``dspy.settings`` where
    the program is made, so a ``with dspy.context(lm=...)`` around it reaches every rollout
    thread). ``predictor_feedback`` asks a GEPA-style metric for each predictor's feedback too.
    """

    def __init__(
        self,
        module: dspy.Module,
        metric: Callable[..., Any],
        *,
        components: str | Iterable[str] = "instructions",
        lm: Any = None,
        adapter: Any = None,
        predictor_feedback: bool = True,
    ) -> None:
        if not isinstance(module, dspy.Module):
            raise ConfigError(
                f"The 'module' parameter must be a dspy.Module; got {describe(module)} instead."
            )
        if not module.predictors():
            raise ConfigError(
                f"The DSPy module {type(module).__name__} has no predictors (dspy.Predict, "
                "ChainOfThought, ...) to optimize."
            )
        self.module = module
        self.metric = metric
        self.style = metric_style(metric)
        self.kinds = parse_kinds(components)
        self.components: list[Component] = find_components(module, self.kinds)
        if not self.components:
            raise ConfigError(
                f"The DSPy module has no components of kind {', '.join(self.kinds)} (tools need a "
                "dspy.ReAct)."
            )
        self.lm = lm if lm is not None else dspy.settings.lm
        self.adapter = adapter if adapter is not None else dspy.settings.adapter
        if self.lm is None:
            raise ConfigError(
                "No DSPy LM: call dspy.configure(lm=dspy.LM(...)) first, or pass lm=dspy.LM(...)."
            )
        self.predictor_feedback = predictor_feedback
        self._examples: dict[str, dspy.Example] = {}

    # ------------------------------------------------------------------ prompts and data
    @property
    def seed(self) -> dict[str, str]:
        """The module's own texts, by component name: the optimizer's seed prompt."""
        return {c.name: c.text for c in self.components}

    def apply(self, texts: str | Mapping[str, str]) -> dspy.Module:
        """A copy of the module with ``texts`` (all or some components) written in."""
        return apply_components(self.module, self.components, self.texts(texts))

    def rows(self, examples: Sequence[Any], split: str) -> list[dict[str, Any]]:
        """The examples as policyopt rows (:func:`example_rows`), remembered by id so that
        ``evaluate`` finds each row's ``dspy.Example`` (labels included) again."""
        rows = example_rows(examples, split)
        for row, example in zip(rows, examples, strict=True):
            self._examples[row["id"]] = example
        return rows

    def example(self, row: Any) -> dspy.Example:
        """The ``dspy.Example`` behind a row (a ``dspy.Example`` is taken as is)."""
        if isinstance(row, dspy.Example):
            return row
        ident = row.get("id") if isinstance(row, Mapping) else None
        if ident not in self._examples:
            raise DatasetError(
                f"Unknown example {describe(row)}: pass examples through DSPyProgram.rows()."
            )
        return self._examples[ident]

    def program(self) -> Program:
        """The policyopt :class:`Program`: the seed texts, ``evaluate`` and ``run``. A program
        with one component has a str prompt (so single-text optimizers such as OPRO run)."""
        seed = self.seed
        prompt: str | dict[str, str] = next(iter(seed.values())) if len(seed) == 1 else seed
        return Program(prompt, self.evaluate, run=self.run)

    def texts(self, prompt: str | Mapping[str, str]) -> dict[str, str]:
        """A prompt as component texts: a str is the text of a one-component program."""
        if isinstance(prompt, str):
            if len(self.components) != 1:
                raise ConfigError(
                    f"A str prompt fits a one-component program; this one has "
                    f"{len(self.components)}: {', '.join(self.seed)}."
                )
            return {self.components[0].name: prompt}
        return dict(prompt)

    # ------------------------------------------------------------------ rollouts
    def _settings(self, trace: list[Any]) -> dict[str, Any]:
        settings: dict[str, Any] = {"lm": self.lm, "trace": trace}
        if self.adapter is not None:
            settings["adapter"] = self.adapter
        return settings

    def predict(
        self, prompt: str | Mapping[str, str], row: Any
    ) -> tuple[Any, list[tuple[str, dict[str, Any], dict[str, Any]]], list[Any]]:
        """Run the module with ``prompt``'s texts on one example: the prediction, its steps
        (predictor name, inputs, outputs; in call order) and DSPy's raw trace."""
        example = self.example(row)
        module = self.apply(prompt)  # this rollout's own copy: rollouts run in parallel
        trace: list[Any] = []
        with dspy.context(**self._settings(trace)):
            prediction = module(**example.inputs())
        names = {id(p): n for n, p in module.named_predictors()}
        steps = [
            (names.get(id(p), type(p).__name__), dict(inputs), _outputs(outputs))
            for p, inputs, outputs in trace
        ]
        return prediction, steps, list(trace)

    def run(self, prompt: str | Mapping[str, str], row: Any) -> dict[str, Any]:
        """The program's outputs on one example (MIPRO bootstraps demos from them)."""
        prediction, _, _ = self.predict(prompt, row)
        return _outputs(prediction)

    def evaluate(self, prompt: str | Mapping[str, str], row: Any) -> Score:
        """Run, score with the metric, and explain: feedback with the whole trajectory."""
        example = self.example(row)
        prediction, steps, trace = self.predict(prompt, row)
        score, feedback = self._call_metric(example, prediction, None, None, None)
        notes = self._predictor_notes(example, prediction, trace, steps, feedback)
        lines = [feedback or f"This run scored {score:g}."]
        lines += [f"Feedback on {name}: {text}" for name, text in notes]
        lines.append("Trajectory (each predictor call, in order):")
        for number, (name, inputs, outputs) in enumerate(steps, start=1):
            shown_in = ", ".join(f"{k}={_short(v)}" for k, v in inputs.items())
            shown_out = ", ".join(f"{k}={_short(v)}" for k, v in outputs.items())
            lines.append(f"{number}. {name}({shown_in}) -> {shown_out}")
        trajectory = [
            {
                "predictor": name,
                "inputs": {k: _short(v) for k, v in i.items()},
                "outputs": {k: _short(v) for k, v in o.items()},
            }
            for name, i, o in steps
        ]
        output = {k: _short(v) for k, v in _outputs(prediction).items()}
        return Score(score, feedback="\n".join(lines), output=output, trace=trajectory)

    def _call_metric(
        self, example: Any, prediction: Any, trace: Any, pred_name: Any, pred_trace: Any
    ) -> tuple[float, str | None]:
        return call_metric(
            self.metric, self.style, example, prediction, trace, pred_name, pred_trace
        )

    def _predictor_notes(
        self,
        example: Any,
        prediction: Any,
        trace: list[Any],
        steps: list[tuple[str, dict[str, Any], dict[str, Any]]],
        module_feedback: str | None,
    ) -> list[tuple[str, str]]:
        """Each called predictor's own feedback from a GEPA-style metric (skipped when it only
        repeats the module's)."""
        if self.style != "gepa" or not self.predictor_feedback:
            return []
        notes = []
        for name in dict.fromkeys(step[0] for step in steps):
            own = [t for t, step in zip(trace, steps, strict=True) if step[0] == name]
            _, text = self._call_metric(example, prediction, trace, name, own)
            if text and text != module_feedback:
                notes.append((name, text))
        return notes
