"""A DSPy program as a benchmark task (policyopt.integrations.dspy.dspy_task): policyopt's
optimizers and DSPy's own (dspy-gepa, dspy-mipro) on the same program, data and budget, with
scripted models; every optimized program scored on test by the same DSPy program."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("dspy")
pytest.importorskip("gepa")

from policyopt.bench import BenchSettings, run_benchmark
from policyopt.errors import ConfigError
from policyopt.integrations.dspy import PlainAdapter, dspy_task
from policyopt.testing import ScriptedLM
from tests.unit.test_dspy_integration import (
    UPPER,
    ExtractFormat,
    examples,
    gepa_metric,
    task_answer,
)

BUDGET = 40
seen_names: set[str] = set()  # the pred_name values the metric was called with


def recording_metric(
    gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None
) -> Any:
    if pred_name is not None:
        seen_names.add(pred_name)
    return gepa_metric(gold, pred, trace, pred_name, pred_trace)


def make_task() -> Any:
    return dspy_task(
        "dspy:extract_format",
        ExtractFormat,
        recording_metric,
        examples(3),
        examples(3, start=3),
        examples(4, start=6),
        adapter=PlainAdapter(),
        lm_kwargs={"max_tokens": 7},
    )


def test_the_task_holds_the_program_and_its_rows() -> None:
    task = make_task()
    assert json.loads(task.seed_prompt) == {
        "extract.instructions": "Find the name.",
        "format.instructions": "Write the name.",
    }
    assert task.train[0] == {"text": "we met Bob0 today", "id": "train/0"}
    assert [row["id"] for row in task.test] == [f"test/{i}" for i in range(4)]
    assert task.lm_kwargs == {"max_tokens": 7}  # what the DSPy peers' task model is given
    program = task.program(ScriptedLM(task_answer))
    assert isinstance(program.prompt, dict)
    better = json.dumps({**program.prompt, "format.instructions": UPPER})
    assert program.evaluate(task.seed_prompt, task.test[0]).score == 0.0  # JSON text works
    assert program.evaluate(better, task.test[0]).score == 1.0
    with pytest.raises(ConfigError, match="is a DSPy program"):
        task.metric("x", task.test[0])


def test_ours_and_dspys_optimizers_run_on_the_same_program(tmp_path: Path) -> None:
    settings = BenchSettings(
        tasks=["dspy:extract_format"],
        optimizers=["gepa", "mipro", "dspy-gepa", "dspy-mipro", "gepa-lib"],
        seeds=[0],
        budget=BUDGET,
        n_jobs=2,
        settings={"dspy-mipro": {"num_candidates": 3}, "gepa": {"merge": False}},
    )
    run = run_benchmark(
        settings,
        tmp_path,
        task_lm=ScriptedLM(task_answer),
        reflection_lm=ScriptedLM(lambda text: f"```\n{UPPER}\n```"),
        tasks={"dspy:extract_format": make_task()},
    )
    records = {r.key.optimizer: r for r in run.records}
    assert records["gepa-lib"].status == "failed"  # a template-only peer says why
    assert "prompt-template tasks" in (records["gepa-lib"].error or "")
    for name in ("gepa", "mipro", "dspy-gepa", "dspy-mipro"):
        record = records[name]
        assert record.status == "ok", (name, record.error)
        assert 0 < record.rollouts <= BUDGET, name
        assert record.baseline_test is not None and record.baseline_test.score == 0.0
        assert record.optimized_test is not None and record.optimized_test.n_examples == 4
        best = json.loads(record.best_prompt)  # every optimizer's result is the program's texts
        assert set(best) == {"extract.instructions", "format.instructions"}, name
    # dspy.GEPA asked for per-predictor feedback under the user's predictor names, as did ours
    assert seen_names == {"extract", "format"}
    for name in ("gepa", "dspy-gepa"):  # reflection finds the rule: every test example right
        assert "UPPER" in json.loads(records[name].best_prompt)["format.instructions"]
        assert records[name].optimized_test.score == 1.0, name  # type: ignore[union-attr]
