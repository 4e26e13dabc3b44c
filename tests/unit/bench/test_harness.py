"""The benchmark harness on a tiny task with scripted LMs: cells, resumption, report, plots."""

from __future__ import annotations

import csv
import io
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from policyopt.bench import (
    BenchSettings,
    CellContext,
    OptimizerOutcome,
    load_records,
    markdown_report,
    register,
    resolve_task,
    run_benchmark,
    win_rate,
    write_report,
)
from policyopt.bench.records import CellKey, CellRecord, SplitScore
from policyopt.errors import ConfigError
from policyopt.tasks.base import Task
from policyopt.testing import ScriptedLM
from policyopt.types import Score

WORDS = {"hot": "cold", "up": "down", "big": "small", "wet": "dry", "day": "night", "in": "out"}
RULE = "Give the opposite of the word."


def _metric(output: str, example: dict[str, Any]) -> Score:
    right = example["answer"] in output.lower()
    return Score(1.0 if right else 0.0, feedback=f"Expected the opposite: {example['answer']}.")


def tiny_task() -> Task:
    rows = [{"id": f"{w}{k}", "word": w, "answer": a} for k in range(3) for w, a in WORDS.items()]
    return Task(
        name="tiny",
        description="opposites, scripted",
        seed_prompt="Answer.",
        reference_prompt=RULE,
        train=rows[:6],
        val=rows[6:12],
        test=rows[12:],
        render_input=lambda e: e["word"],
        metric=_metric,
    )


def task_lm() -> ScriptedLM:
    """Answers right only when the prompt asks for the opposite."""

    def answer(text: str) -> str:
        word = text.strip().split()[-1]
        return WORDS.get(word, "?") if "opposite" in text else word

    return ScriptedLM(answer)


def reflection_lm() -> ScriptedLM:
    return ScriptedLM(lambda text: f"```\n{RULE}\n```")


def settings(**overrides: Any) -> BenchSettings:
    base: dict[str, Any] = {
        "tasks": ["tiny"],
        "optimizers": ["gepa", "mipro"],
        "seeds": [0, 1],
        "budget": 60,
        "n_jobs": 2,
    }
    return BenchSettings(**{**base, **overrides})


def run(out: Path, **overrides: Any) -> Any:
    return run_benchmark(
        settings(**overrides),
        out,
        task_lm=task_lm(),
        reflection_lm=reflection_lm(),
        tasks={"tiny": tiny_task()},
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    run(out)
    return out


def test_every_cell_records_scores_spend_and_time(finished: Path) -> None:
    records = load_records(finished)
    assert [(r.key.optimizer, r.key.seed) for r in records] == [
        ("gepa", 0),
        ("gepa", 1),
        ("mipro", 0),
        ("mipro", 1),
    ]
    for r in records:
        assert r.status == "ok", r.error
        assert r.baseline_test is not None and r.optimized_test is not None
        assert r.baseline_test.score == 0.0  # "Answer." never asks for the opposite
        assert r.optimized_test.score == 1.0  # the scripted reflection gives the rule
        assert r.optimized_test.n_examples == 6
        assert 0 < r.rollouts <= 60
        assert r.task_usage.calls >= r.rollouts - r.task_usage.cache_hits > 0
        assert r.optimizer_usage.calls > 0
        assert r.search_wall_s > 0 and r.wall_s >= r.search_wall_s
        assert r.curve and r.curve[-1][1] == r.best_val_score
        assert "policyopt" in r.versions


def test_seed_prompt_is_scored_once_per_task(finished: Path) -> None:
    baselines = list((finished / "baselines").glob("*.json"))
    assert len(baselines) == 1
    saved = json.loads(baselines[0].read_text())
    assert saved["score"]["n_examples"] == 6


def test_a_finished_cell_is_never_run_again(finished: Path, tmp_path: Path) -> None:
    calls: list[int] = []
    lock = threading.Lock()

    class Counting:
        name = "counting"

        def unavailable(self) -> str | None:
            return None

        def run(self, ctx: CellContext) -> OptimizerOutcome:
            with lock:
                calls.append(ctx.seed)
            return OptimizerOutcome(best_prompt=RULE, rollouts=0)

    register("counting", Counting)
    out = tmp_path / "b"
    first = run(out, optimizers=["counting", "gepa"], seeds=[0, 1, 2])
    assert sorted(calls) == [0, 1, 2] and len(first.ran) == 6
    second = run(out, optimizers=["counting", "gepa"], seeds=[0, 1, 2])
    assert sorted(calls) == [0, 1, 2]  # nothing ran again
    assert second.ran == [] and len(second.skipped) == 6
    assert [r.model_dump() for r in second.records] == [r.model_dump() for r in first.records]
    # a new seed runs only the new cells; a different budget is a different cell
    third = run(out, optimizers=["counting"], seeds=[2, 3])
    assert sorted(calls) == [0, 1, 2, 3] and len(third.ran) == 1
    run(out, optimizers=["counting"], seeds=[3], budget=30)
    assert sorted(calls) == [0, 1, 2, 3, 3]


def test_a_finished_grid_rerun_starts_no_model_and_no_cluster(
    finished: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing left to run: the models are not opened and the cluster is never asked for."""
    from policyopt.bench import runner

    def no_models(*args: Any) -> Any:
        raise AssertionError("a rerun with nothing to run opened the models")

    def no_cluster() -> Any:
        raise AssertionError("a rerun with nothing to run started the cluster")

    monkeypatch.setattr(runner, "_models", no_models)
    before = load_records(finished)
    again = run_benchmark(
        settings(), finished, task_lm=task_lm(), reflection_lm=reflection_lm(),
        tasks={"tiny": tiny_task()}, dask=no_cluster,
    )  # fmt: skip
    assert again.ran == [] and len(again.skipped) == 4
    assert again.records == before


def test_a_crashed_search_is_a_failed_cell_and_runs_again(tmp_path: Path) -> None:
    attempts: list[int] = []

    class Flaky:
        name = "flaky"

        def unavailable(self) -> str | None:
            return None

        def run(self, ctx: CellContext) -> OptimizerOutcome:
            attempts.append(ctx.seed)
            if len(attempts) == 1:
                raise RuntimeError("the peer blew up")
            return OptimizerOutcome(best_prompt=RULE, rollouts=3)

    register("flaky", Flaky)
    first = run(tmp_path, optimizers=["flaky"], seeds=[0])
    (record,) = first.records
    assert record.status == "failed" and record.error == "RuntimeError: the peer blew up"
    assert "failed: RuntimeError: the peer blew up" in markdown_report(first.records)
    assert (tmp_path / "runs" / record.key.slug / "error.txt").exists()
    second = run(tmp_path, optimizers=["flaky"], seeds=[0])
    assert second.records[0].status == "ok" and attempts == [0, 0]


def test_unavailable_optimizers_are_skipped_with_the_reason(tmp_path: Path) -> None:
    class Missing:
        name = "missing"

        def unavailable(self) -> str | None:
            return "the `nothing` package is not installed"

        def run(self, ctx: CellContext) -> OptimizerOutcome:  # pragma: no cover
            raise AssertionError("must not run")

    register("missing", Missing)
    result = run(tmp_path, optimizers=["missing"], seeds=[0])
    assert result.unavailable == {"missing": "the `nothing` package is not installed"}
    assert result.records == []


def test_unknown_names_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"Unknown optimizer 'gepaa'.*registered.*gepa"):
        run(tmp_path, optimizers=["gepaa"])
    with pytest.raises(ConfigError, match="Unknown task 'nope'"):
        run_benchmark(settings(tasks=["nope"]), tmp_path, task_lm=task_lm())
    with pytest.raises(ValueError, match="repeat"):
        settings(optimizers=["gepa", "gepa"])


def test_report_tables_files_and_plots(finished: Path) -> None:
    records = load_records(finished)
    paths = write_report(records, finished)
    text = paths["markdown"].read_text()
    assert "## tiny" in text and "## Overall" in text
    row = next(line for line in text.splitlines() if line.startswith("| gepa | 2 |"))
    assert "0.000 ± 0.000 | 1.000 ± 0.000 | 1.000 |" in row
    assert "win rate vs mipro" in text and "0.50 (2)" in text  # all ties
    rows = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert len(rows) == len(records) and list(rows[0])[:4] == [
        "task",
        "optimizer",
        "seed",
        "budget",
    ]
    assert rows[-1]["best_prompt"] == records[-1].best_prompt  # multi-line prompts survive
    assert len(json.loads(paths["json"].read_text())) == len(records)
    for name in ("bars", "curves", "cost"):
        data = paths[name].read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def _record(task: str, optimizer: str, seed: int, base: float, opt: float) -> CellRecord:
    key = CellKey(task=task, optimizer=optimizer, seed=seed, budget=10, fingerprint="x")
    return CellRecord(
        key=key,
        status="ok",
        baseline_test=SplitScore(score=base, n_examples=10),
        optimized_test=SplitScore(score=opt, n_examples=10),
    )


def test_win_rate_and_gains_by_hand() -> None:
    records = [
        _record("a", "x", 0, 0.1, 0.5),
        _record("a", "y", 0, 0.1, 0.3),
        _record("a", "x", 1, 0.1, 0.2),
        _record("a", "y", 1, 0.1, 0.2),
        _record("b", "x", 0, 0.4, 0.3),
        _record("b", "y", 0, 0.4, 0.6),
        _record("b", "x", 1, 0.4, 0.9),  # no y for (b, 1): not compared
    ]
    assert win_rate(records, "x", "y") == (pytest.approx(0.5), 3)
    assert win_rate(records, "y", "x") == (pytest.approx(0.5), 3)
    assert win_rate(records, "x", "z") is None
    text = markdown_report(records)
    overall = text.split("## Overall")[1]
    x_row = next(line for line in overall.splitlines() if line.startswith("| x |"))
    # gains 0.4, 0.1, -0.1, 0.5: mean 0.225, median 0.25, 3 of 4 beat the seed prompt
    assert "| x | 4 | 0.475 | 0.225 | 0.250 | 3/4 |" in x_row


def test_builtin_task_splits_are_deterministic() -> None:
    a, b = resolve_task("antonyms", 0), resolve_task("antonyms", 0)
    assert [e["id"] for e in a.test] == [e["id"] for e in b.test]
    c = resolve_task("antonyms", 1)
    assert [e["id"] for e in a.test] != [e["id"] for e in c.test]
    small = resolve_task("antonyms", 0, limit=5)
    assert [len(small.train), len(small.val), len(small.test)] == [5, 5, 5]
    ids = {e["id"] for split in (a.train, a.val, a.test) for e in split}
    assert len(ids) == len(a.train) + len(a.val) + len(a.test)


def test_cell_keys_change_with_what_matters() -> None:
    s = settings()
    key = CellKey.of(s, "tiny", "gepa", 0)
    assert key == CellKey.of(settings(n_jobs=1, seeds=[5]), "tiny", "gepa", 0)
    assert key != CellKey.of(settings(limit=3), "tiny", "gepa", 0)
    assert key != CellKey.of(settings(settings={"gepa": {"minibatch_size": 2}}), "tiny", "gepa", 0)
    assert re.fullmatch(r"tiny__gepa__s0__b60__[0-9a-f]{10}", key.slug)


def test_langprobe_tasks_route_to_the_loaders(monkeypatch: pytest.MonkeyPatch) -> None:
    from policyopt.tasks import langprobe

    asked: list[tuple[str, int]] = []

    def fake_load(name: str, *, seed: int = 1, **_: Any) -> Task:
        asked.append((name, seed))
        return tiny_task()

    monkeypatch.setattr(langprobe, "load_langprobe", fake_load)
    task = resolve_task("langprobe:gsm8k", split_seed=3, limit=2)
    assert asked == [("gsm8k", 3)] and len(task.test) == 2


def test_metered_views_count_their_own_calls() -> None:
    from policyopt.lm.metered import MeteredLM

    shared = task_lm()
    a, b = MeteredLM(shared), MeteredLM(shared)
    assert a("Give the opposite of hot") == "cold"
    a("up")
    b("big")
    assert (a.usage.calls, b.usage.calls) == (2, 1)
    failing = MeteredLM(ScriptedLM([]))
    with pytest.raises(LookupError):
        failing("x")
    assert failing.usage.errors == 1 and failing.usage.calls == 0
