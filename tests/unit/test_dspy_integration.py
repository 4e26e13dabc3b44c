"""policyopt.integrations.dspy with scripted LMs: components, write-back, evaluate's feedback and
trajectory, metric signatures, thread safety, input errors, and optimize_dspy end to end."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

dspy = pytest.importorskip("dspy")

from policyopt.bench.peers._dspy import dspy_lm  # noqa: E402
from policyopt.errors import ConfigError, DatasetError, ScoreTypeError  # noqa: E402
from policyopt.integrations.dspy import (  # noqa: E402
    DSPyProgram,
    PlainAdapter,
    find_components,
    optimize_dspy,
)
from policyopt.opro import OPRO  # noqa: E402
from policyopt.testing import ScriptedLM  # noqa: E402

UPPER = "Write the name in UPPER case."


def task_answer(text: str) -> str:
    """The scripted task model: the extract step answers the capitalised word of the text; the
    format step copies the name, in upper case only when its instruction says UPPER."""
    last = text.rstrip().splitlines()[-1]
    if last == "Name:":  # the last Text: line is the input (demos may come before it)
        found = re.findall(r"Text: .*?\b([A-Z][a-z]+\d*)", text)
        return found[-1] if found else "nobody"
    if last == "Label:":
        names = re.findall(r"Name: (\S+)", text)
        value = names[-1] if names else ""
        return value.upper() if "UPPER" in text.split("Name:")[0] else value
    raise AssertionError(f"unexpected prompt {text!r}")


def task_lm() -> Any:
    lm, _ = dspy_lm(ScriptedLM(task_answer), "task")
    return lm


class ExtractFormat(dspy.Module):
    """Two predictors: find the name in a text, then write it as a label."""

    def __init__(self) -> None:
        super().__init__()
        self.extract = dspy.Predict(dspy.Signature("text -> name", "Find the name."))
        self.format = dspy.Predict(dspy.Signature("name -> label", "Write the name."))

    def forward(self, text: str) -> Any:
        return self.format(name=self.extract(text=text).name)


def examples(n: int, start: int = 0) -> list[Any]:
    return [
        dspy.Example(text=f"we met Bob{i} today", label=f"BOB{i}").with_inputs("text")
        for i in range(start, start + n)
    ]


def plain_metric(example: Any, pred: Any, trace: Any = None) -> bool:
    return bool(pred.label == example.label)


def gepa_metric(
    gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None
) -> Any:
    ok = pred.label == gold.label
    feedback = "Correct." if ok else f"Expected {gold.label}, got {pred.label}."
    if pred_name is not None:
        (step,) = pred_trace  # only this predictor's calls
        feedback = f"{pred_name} saw {sorted(step[1])} and wrote {sorted(step[2].keys())}."
    return dspy.Prediction(score=float(ok), feedback=feedback)


def make(metric: Callable[..., Any] = plain_metric, **kw: Any) -> DSPyProgram:
    return DSPyProgram(ExtractFormat(), metric, lm=task_lm(), adapter=PlainAdapter(), **kw)


# --------------------------------------------------------------------------- components
def test_instructions_are_named_components_in_predictor_order() -> None:
    program = make()
    assert program.seed == {
        "extract.instructions": "Find the name.",
        "format.instructions": "Write the name.",
    }


def test_fields_and_tools_are_components_on_request() -> None:
    program = make(components=("instructions", "fields"))
    assert list(program.seed) == [
        "extract.instructions",
        "extract.fields.text",
        "extract.fields.name",
        "format.instructions",
        "format.fields.name",
        "format.fields.label",
    ]
    assert program.seed["extract.fields.text"] == ""  # declared without a description

    def search(query: str) -> str:
        """Look the query up."""
        return query

    agent = dspy.ReAct("question -> answer", tools=[search])
    names = [c.name for c in find_components(agent, ["tools"])]
    assert names == ["tools.search"]  # ReAct's own finish tool is not the user's


def test_unknown_component_kind_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'components' parameter"):
        make(components="demos")


# --------------------------------------------------------------------------- write-back
def test_apply_writes_into_a_copy_and_leaves_the_module_alone() -> None:
    program = make(components=("instructions", "fields"))
    copy = program.apply({"format.instructions": UPPER, "format.fields.label": "upper case"})
    assert copy is not program.module
    assert copy.format.signature.instructions == UPPER
    assert copy.format.signature.output_fields["label"].json_schema_extra["desc"] == "upper case"
    assert program.module.format.signature.instructions == "Write the name."
    assert copy.extract.signature.instructions == "Find the name."
    with pytest.raises(ConfigError, match="Unknown DSPy component"):
        program.apply({"nope.instructions": "x"})


def test_a_new_tool_description_reaches_the_react_instructions() -> None:
    def search(query: str) -> str:
        """Look the query up."""
        return query

    agent = dspy.ReAct("question -> answer", tools=[search])
    components = find_components(agent, ["instructions", "tools"])
    from policyopt.integrations.dspy.components import apply_components

    copy = apply_components(agent, components, {"tools.search": "Search the city atlas."})
    assert copy.tools["search"].desc == "Search the city atlas."
    assert "<desc>Search the city atlas.</desc>" in copy.react.signature.instructions
    assert "Look the query up." not in copy.react.signature.instructions
    assert agent.tools["search"].desc == "Look the query up."  # the seed agent is untouched


# --------------------------------------------------------------------------- evaluate
def test_evaluate_scores_and_feeds_back_the_whole_trajectory() -> None:
    program = make()
    rows = program.rows(examples(2), "train")
    assert rows[0] == {"text": "we met Bob0 today", "id": "train/0"}  # no label shown

    seed = program.evaluate(program.seed, rows[0])
    assert seed.score == 0.0
    better = program.evaluate({**program.seed, "format.instructions": UPPER}, rows[0])
    assert better.score == 1.0
    assert better.output == {"label": "BOB0"}
    assert [step["predictor"] for step in better.trace] == ["extract", "format"]
    lines = better.feedback.splitlines()
    assert lines[0] == "This run scored 1."  # a plain metric gives no feedback
    assert lines[-2:] == [
        "1. extract(text=we met Bob0 today) -> name=Bob0",
        "2. format(name=Bob0) -> label=BOB0",
    ]


def test_a_gepa_metric_gives_feedback_per_predictor() -> None:
    program = make(gepa_metric)
    score = program.evaluate(program.seed, program.rows(examples(1), "train")[0])
    assert score.score == 0.0
    lines = score.feedback.splitlines()
    assert lines[0] == "Expected BOB0, got Bob0."
    assert "Feedback on extract: extract saw ['text'] and wrote ['name']." in lines
    assert "Feedback on format: format saw ['name'] and wrote ['label']." in lines


def test_predictor_feedback_can_be_turned_off() -> None:
    program = make(gepa_metric, predictor_feedback=False)
    score = program.evaluate(program.seed, program.rows(examples(1), "train")[0])
    assert "Feedback on" not in score.feedback


def test_a_metric_that_raises_fails_the_rollout_with_its_reason() -> None:
    def broken(example: Any, pred: Any, trace: Any = None) -> float:
        raise KeyError("label")

    program = make(broken)
    with pytest.raises(RuntimeError, match="The metric broken raised KeyError"):
        program.evaluate(program.seed, program.rows(examples(1), "train")[0])


def test_a_metric_answer_that_is_no_score_is_a_score_type_error() -> None:
    program = make(lambda example, pred, trace=None: "yes")
    with pytest.raises(ScoreTypeError, match="must return a number"):
        program.evaluate(program.seed, program.rows(examples(1), "train")[0])


def test_a_metric_with_one_argument_is_refused() -> None:
    with pytest.raises(ConfigError, match="takes 1 positional"):
        make(lambda pred: 1.0)


# --------------------------------------------------------------------------- threads
def test_parallel_rollouts_each_run_their_own_texts() -> None:
    """Rollouts in worker threads run their own prompt, with the LM captured from the caller's
    ``dspy.context`` (worker threads do not inherit it)."""
    with dspy.context(lm=task_lm(), adapter=PlainAdapter()):
        program = DSPyProgram(ExtractFormat(), plain_metric)
    rows = program.rows(examples(8), "train")
    prompts = [program.seed, {**program.seed, "format.instructions": UPPER}]
    jobs = [(prompts[i % 2], rows[i % 8]) for i in range(64)]
    barrier = threading.Barrier(8)

    def one(job: tuple[dict[str, str], dict[str, Any]]) -> float:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=0.5)  # the first eight start together
        return program.evaluate(*job).score

    with ThreadPoolExecutor(8) as pool:
        scores = list(pool.map(one, jobs))
    assert scores == [float(i % 2) for i in range(64)]
    assert program.module.format.signature.instructions == "Write the name."


# --------------------------------------------------------------------------- input errors
def test_bad_inputs_get_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="must be a dspy.Module"):
        DSPyProgram(object(), plain_metric, lm=task_lm())  # type: ignore[arg-type]
    program = make()
    with pytest.raises(DatasetError, match="'trainset' is empty"):
        program.rows([], "train")
    with pytest.raises(DatasetError, match="names no inputs"):
        program.rows([dspy.Example(text="a", label="b")], "train")
    with pytest.raises(DatasetError, match="not a dspy.Example"):
        program.rows([{"text": "a"}], "val")
    with pytest.raises(ConfigError, match="needs lm="):
        optimize_dspy(ExtractFormat(), plain_metric, examples(2), task_lm=task_lm())
    with pytest.raises(ConfigError, match="Optimizer instance and lm"):
        optimize_dspy(
            ExtractFormat(),
            plain_metric,
            examples(2),
            optimizer=OPRO(meta_lm=ScriptedLM([]), max_rollouts=4),
            lm=ScriptedLM([]),
            task_lm=task_lm(),
        )


def test_no_dspy_lm_is_a_config_error() -> None:
    with dspy.context(lm=None), pytest.raises(ConfigError, match="No DSPy LM"):
        DSPyProgram(ExtractFormat(), plain_metric)


# --------------------------------------------------------------------------- optimize_dspy
def proposer() -> ScriptedLM:
    """Every proposal (reflection, instruction proposal, meta-prompt) is the UPPER rule."""
    return ScriptedLM(lambda text: f"```\n{UPPER}\n```")


@pytest.mark.parametrize(
    ("optimizer", "settings"),
    [
        ("gepa", {"minibatch_size": 2, "merge": False}),
        ("mipro", {"num_candidates": 2, "max_bootstrapped_demos": 0, "max_labeled_demos": 0}),
    ],
)
def test_every_registered_optimizer_runs_on_a_dspy_program(
    optimizer: str, settings: dict[str, Any]
) -> None:
    module = ExtractFormat()
    result = optimize_dspy(
        module,
        gepa_metric,
        examples(3),
        examples(3, start=3),
        optimizer=optimizer,
        lm=proposer(),
        max_rollouts=40,
        task_lm=task_lm(),
        adapter=PlainAdapter(),
        n_jobs=2,
        progress=False,
        **settings,
    )
    assert result.result.optimizer == optimizer
    assert result.result.n_rollouts <= 40
    assert result.result.best_score == 1.0
    assert result.best_components["format.instructions"] == UPPER
    assert result.changed["format.instructions"] == UPPER
    assert result.module.format.signature.instructions == UPPER
    assert module.format.signature.instructions == "Write the name."  # the user's is unchanged
    with dspy.context(lm=task_lm(), adapter=PlainAdapter()):
        assert result.module(text="we met Ann today").label == "ANN"


class FormatOnly(dspy.Module):
    """One predictor: the name is given; write it as a label."""

    def __init__(self) -> None:
        super().__init__()
        self.format = dspy.Predict(dspy.Signature("name -> label", "Write the name."))

    def forward(self, name: str) -> Any:
        return self.format(name=name)


def test_a_one_component_program_runs_single_text_optimizers_such_as_opro() -> None:
    """OPRO optimizes one text; a one-predictor program is a str prompt, and the optimizer
    instance is used as given."""
    data = [dspy.Example(name=f"Bob{i}", label=f"BOB{i}").with_inputs("name") for i in range(3)]
    opro = OPRO(meta_lm=proposer(), max_rollouts=20, n_jobs=1, progress=False)
    result = optimize_dspy(
        FormatOnly(), plain_metric, data, optimizer=opro, task_lm=task_lm(), adapter=PlainAdapter()
    )
    assert result.result.optimizer == "opro"
    assert result.result.best_prompt == UPPER
    assert result.best_components == {"format.instructions": UPPER}
    assert result.module.format.signature.instructions == UPPER
    assert result.result.n_rollouts <= 20


def test_opro_refuses_a_program_of_several_components() -> None:
    with pytest.raises(ConfigError, match="OPRO optimizes one instruction"):
        optimize_dspy(
            ExtractFormat(),
            plain_metric,
            examples(3),
            optimizer="opro",
            lm=proposer(),
            max_rollouts=20,
            task_lm=task_lm(),
            adapter=PlainAdapter(),
            progress=False,
        )


def test_the_guide_script_compiles_and_imports_what_exists() -> None:
    """docs/dspy.md's whole script: valid Python whose policyopt imports all exist."""
    import ast
    import importlib
    from pathlib import Path

    page = (Path(__file__).parents[2] / "docs" / "dspy.md").read_text(encoding="utf-8")
    script = re.search(r"```python\n(.*?)```", page, re.DOTALL)
    assert script is not None
    tree = ast.parse(script.group(1))
    imported = [
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("policyopt")
        for alias in node.names
    ]
    assert ("policyopt.integrations.dspy", "optimize_dspy") in imported
    for module, name in imported:
        assert hasattr(importlib.import_module(module), name), f"{module}.{name}"


# --------------------------------------------------------------------------- PlainAdapter
def test_plain_adapter_writes_one_user_message_and_reads_fields_by_label() -> None:
    adapter = PlainAdapter()
    signature = dspy.Signature("question -> reasoning, final_answer", "Answer briefly.")
    messages = adapter.format(
        signature,
        [{"question": "1+1?", "reasoning": "add", "final_answer": "2"}],
        {"question": "2+2?"},
    )
    assert messages == [
        {
            "role": "user",
            "content": "Answer briefly.\n\nQuestion: 1+1?\nReasoning: add\nFinal answer: 2\n\n"
            "Question: 2+2?\nReasoning:",
        }
    ]
    parsed = adapter.parse(signature, "two and two\nFinal answer: 4\n")
    assert parsed == {"reasoning": "two and two", "final_answer": "4"}
    assert adapter.parse(signature, "nothing labelled") == {
        "reasoning": "nothing labelled",
        "final_answer": "",
    }
    one = dspy.Signature("question -> answer")
    assert adapter.parse(one, "  Paris\n") == {"answer": "Paris"}
