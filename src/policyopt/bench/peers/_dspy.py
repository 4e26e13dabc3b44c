"""DSPy glue shared by the DSPy peers: our LMs as DSPy LMs, the task as a DSPy program.

- :func:`dspy_lm`: a ``dspy.LM`` whose engine sends every request to one of the cell's LMs
  (``complete(messages, **settings)``), so the harness counts DSPy's calls like everyone's.
  DSPy 3.4 deprecates ``BaseLM.forward()`` subclasses (a DeprecationWarning on every call) in
  favour of a custom engine with ``complete(Request) -> Response``, which is what this is; its
  response cache is off.
- :func:`task_program`: a one-predictor DSPy program ``input -> output`` whose adapter renders
  exactly the task's user message (``task.render(prompt, example)``), demos written into the
  prompt as policyopt's MIPRO writes them (``policyopt.mipro.format_prompt``), and reads the
  whole reply as the output. So a DSPy candidate *is* a policyopt prompt, and the comparison is
  on equal prompts (DSPy's ChatAdapter would put the instruction in a system message, which the
  embedded model ignores, and ask for ``[[ ## field ## ]]`` markers it never writes).
- :func:`lenient_chat_adapter`: DSPy's ChatAdapter for the proposer/reflection programs, taking
  an unparsable reply whole as the field (as policyopt's proposer takes an unfenced answer).
- :class:`Setup`: what a peer compiles: the task program above, or a DSPy-program task's own
  module (``task.dspy_program``), with its examples, metric and adapter.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from policyopt.bench.peers._common import ProgramRuns
from policyopt.errors import ConfigError
from policyopt.lm.base import LM
from policyopt.tasks.base import Task

__all__ = [
    "DSPyData",
    "Setup",
    "dspy_lm",
    "lenient_chat_adapter",
    "make_data",
    "prompt_of",
    "task_program",
]


class _Engine:
    """A DSPy engine over one of our LMs: a Request's messages in, a Response out.

    ``settings`` go with every request; request settings named in ``pass_through`` (e.g. a
    proposer's sampling temperature) are passed on when DSPy sets them, others are ignored (the
    task program keeps the task's own ``lm_kwargs``).
    """

    def __init__(self, lm: LM, settings: dict[str, Any], pass_through: Sequence[str]) -> None:
        self.lm = lm
        self.settings = settings
        self.pass_through = tuple(pass_through)
        self.calls = 0
        self._lock = threading.Lock()

    def complete(self, request: Any) -> Any:
        from dspy.lm15 import Message, Response, TextPart, Usage

        messages: list[dict[str, str]] = []
        if request.system is not None:
            system = request.system
            text = system if isinstance(system, str) else "".join(p.text for p in system)
            messages.append({"role": "system", "content": text})
        for message in request.messages:
            text = "".join(p.text for p in message.parts if isinstance(p, TextPart))
            messages.append({"role": message.role, "content": text})
        settings = dict(self.settings)
        for name in self.pass_through:
            value = getattr(request.config, name, None)
            if value is not None:
                settings[name] = value
        completion = self.lm.complete(messages, **settings)
        with self._lock:
            self.calls += 1
        return Response(
            id=None,
            model=self.lm.model or "policyopt",
            message=Message.assistant([TextPart(completion.text)]),
            finish_reason="length" if completion.truncated else "stop",
            usage=Usage(
                input_tokens=completion.prompt_tokens, output_tokens=completion.completion_tokens
            ),
        )

    def stream(self, request: Any) -> Any:
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        """Nothing to close: the LM belongs to the harness."""


def dspy_lm(
    lm: LM, name: str, settings: dict[str, Any] | None = None, pass_through: Sequence[str] = ()
) -> tuple[Any, _Engine]:
    """A ``dspy.LM`` (no cache, no retries of its own) over ``lm``, and its engine."""
    import dspy

    engine = _Engine(lm, dict(settings or {}), pass_through)
    return dspy.LM(f"policyopt/{name}", engine=engine, cache=False, num_retries=0), engine


def lenient_chat_adapter() -> Any:
    """DSPy's ChatAdapter, except that an unparsable reply becomes every output field, whole."""
    import dspy
    from dspy.utils.exceptions import AdapterParseError

    class LenientChatAdapter(dspy.ChatAdapter):
        def parse(self, signature: Any, completion: str) -> dict[str, Any]:
            try:
                return dict(super().parse(signature, completion))
            except AdapterParseError:
                return {name: completion.strip() for name in signature.output_fields}

    return LenientChatAdapter(use_json_adapter_fallback=False)


@dataclass
class DSPyData:
    """The task's splits as ``dspy.Example`` (``input``: the example as policyopt's MIPRO shows it
    in a demo; ``output``: its label, when it has one), and the rows behind them."""

    train: list[Any]
    val: list[Any]
    rows: dict[tuple[str, str | None], dict[str, Any]]
    by_input: dict[str, dict[str, Any]]
    label_key: str | None

    def row(self, example: Any) -> dict[str, Any]:
        """The task row behind a ``dspy.Example`` (DSPy copies examples, so by content)."""
        return self.rows[(str(example.input), example.get("output"))]


def make_data(task: Task) -> DSPyData:
    """DSPy examples of the task's train and val splits.

    An example is found again by its input and label, so two examples alike in both must be
    alike for the task too (same rendering, same metric); otherwise this is a ConfigError.
    """
    import dspy

    from policyopt.mipro.demos import demo_input, detect_label_key

    label_key = detect_label_key([*task.train, *task.val])
    rows: dict[tuple[str, str | None], dict[str, Any]] = {}
    by_input: dict[str, dict[str, Any]] = {}
    splits: dict[str, list[Any]] = {"train": [], "val": []}
    for split, source in (("train", task.train), ("val", task.val)):
        for row in source:
            text = demo_input(row, label_key)
            fields: dict[str, Any] = {"input": text}
            label: str | None = None
            if label_key is not None:
                value = row[label_key]
                label = str(value[0] if isinstance(value, list) and value else value)
                fields["output"] = label
            same_input = by_input.setdefault(text, row)
            same = rows.setdefault((text, label), row)
            if task.render_input(same_input) != task.render_input(row) or _strip_id(
                same
            ) != _strip_id(row):
                raise ConfigError(
                    f"Task {task.name!r}: two examples show the same input {text[:80]!r} (and "
                    "label) but differ; the DSPy peers find an example by its input and label."
                )
            splits[split].append(dspy.Example(**fields).with_inputs("input"))
    return DSPyData(splits["train"], splits["val"], rows, by_input, label_key)


def _strip_id(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "id"}


def prompt_of(instruction: str, demos: Sequence[Any]) -> str:
    """The policyopt prompt a DSPy predictor stands for: its instruction, then its demos as
    ``policyopt.mipro.format_prompt`` writes them."""
    from policyopt.mipro.demos import Demo, format_prompt

    shown = [
        Demo(str(d["input"]), str(d["output"]))
        for d in demos
        if d.get("input") is not None and d.get("output") is not None
    ]
    return format_prompt(instruction, shown)


def task_program(task: Task, data: DSPyData, runs: ProgramRuns) -> Any:
    """The task as a DSPy program, seeded with the task's seed prompt; counts its runs.

    Its predictor's adapter renders ``task.render(prompt_of(instructions, demos), row)``: the
    user message policyopt's task program sends for that prompt. (The counter and the task are
    closed over, not attributes: DSPy deep-copies programs.)
    """
    import dspy

    class PlainAdapter(dspy.Adapter):
        def format(
            self, signature: Any, demos: list[dict[str, Any]], inputs: dict[str, Any]
        ) -> list[dict[str, Any]]:
            row = data.by_input[str(inputs["input"])]
            text = task.render(prompt_of(signature.instructions, demos), row)
            return [{"role": "user", "content": text}]

        def parse(self, signature: Any, completion: str) -> dict[str, Any]:
            return {name: completion for name in signature.output_fields}

    plain = PlainAdapter()
    signature = dspy.Signature("input -> output", task.seed_prompt)

    class TaskProgram(dspy.Module):
        def __init__(self) -> None:
            super().__init__()
            self.predict = dspy.Predict(signature)

        def forward(self, input: str) -> Any:
            runs.add()
            try:
                with dspy.context(adapter=plain):
                    return self.predict(input=input)
            except Exception as exc:
                runs.failed(exc)
                raise

    return TaskProgram()


@dataclass
class Setup:
    """What a DSPy peer compiles for a task, and how it reads the result back.

    A template task: :func:`task_program` on :func:`make_data`'s examples, the lenient
    ChatAdapter, the result as one prompt. A DSPy-program task (``task.dspy_program``, see
    :mod:`policyopt.integrations.dspy.task`): the user's module itself (wrapped to count its
    runs), its own examples, metric and adapter; the result as its components' JSON text, and
    a scorer for the test split when the compiled module carries demos (a prompt cannot).
    """

    program: Any
    trainset: list[Any]
    valset: list[Any]
    adapter: Any
    labeled: bool  # whether the examples carry labels (labeled demos are possible)
    score: Any  # (gold, prediction, trace, pred_name, pred_trace) -> Score
    best_prompt: Any  # compiled program -> str
    scorer: Any  # (compiled program, task LM) -> (row -> Score) | None

    @staticmethod
    def of(task: Task, runs: ProgramRuns) -> Setup:
        """The setup for ``task``; ``runs`` counts the program's runs."""
        native = getattr(task, "dspy_program", None)
        if native is not None:
            return _native_setup(native, runs)
        from policyopt.types import Score

        data = make_data(task)

        def score(
            gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None
        ) -> Score:
            return task.metric(str(getattr(pred, "output", "") or ""), data.row(gold))

        def best_prompt(compiled: Any) -> str:
            return prompt_of(compiled.predict.signature.instructions, compiled.predict.demos)

        return Setup(
            program=task_program(task, data, runs),
            trainset=data.train,
            valset=data.val,
            adapter=lenient_chat_adapter(),
            labeled=data.label_key is not None,
            score=score,
            best_prompt=best_prompt,
            scorer=lambda compiled, lm: None,
        )

    def demos(self, compiled: Any) -> int:
        """How many demos the compiled program's predictors carry, in all."""
        return sum(len(p.demos) for p in compiled.predictors())


def _native_setup(native: Any, runs: ProgramRuns) -> Setup:
    import json

    import dspy

    class Counted(dspy.Module):
        """The user's module, its runs counted (a failed run too)."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = native.module()

        def forward(self, **inputs: Any) -> Any:
            runs.add()
            try:
                return self.inner(**inputs)
            except Exception as exc:
                runs.failed(exc)
                raise

    def score(
        gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None
    ) -> Any:
        # the metric sees the user's predictor names, not the counting wrapper's
        name = pred_name.removeprefix("inner.") if isinstance(pred_name, str) else pred_name
        return native.score(gold, pred, trace, name, pred_trace)

    def scorer(compiled: Any, lm: Any) -> Any:
        if not any(p.demos for p in compiled.predictors()):
            return None  # its instructions are all there is: the JSON prompt reproduces it
        return native.scorer(compiled.inner, lm)

    return Setup(
        program=Counted(),
        trainset=native.trainset,
        valset=native.valset,
        adapter=native.adapter,
        labeled=True,
        score=score,
        best_prompt=lambda compiled: json.dumps(
            native.components(compiled.inner), ensure_ascii=False
        ),
        scorer=scorer,
    )
