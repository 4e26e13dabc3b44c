"""``run_benchmark(mlflow=URI)`` / ``policyopt bench --mlflow``: one parent run, one nested run
per cell, read back from a real SQLite MLflow store."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from policyopt.bench import CellContext, OptimizerOutcome, register, run_benchmark
from policyopt.cli import app
from tests.unit.bench.test_harness import reflection_lm, settings, task_lm, tiny_task


class Broken:
    """A peer optimizer whose search crashes (a failed cell)."""

    name = "broken"

    def unavailable(self) -> str | None:
        return None

    def run(self, ctx: CellContext) -> OptimizerOutcome:
        raise RuntimeError("the peer blew up")


@pytest.mark.slow
def test_bench_logs_a_parent_run_and_a_nested_run_per_cell(tmp_path: Path) -> None:
    register("broken", Broken)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_benchmark(
        settings(optimizers=["gepa", "broken"], seeds=[0]),
        tmp_path / "out",
        task_lm=task_lm(),
        reflection_lm=reflection_lm(),
        tasks={"tiny": tiny_task()},
        mlflow=uri,
    )
    client = MlflowClient(tracking_uri=uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "policyopt-bench"]
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    (parent,) = parents
    assert parent.info.status == "FINISHED"
    assert parent.data.params["optimizers"] == "gepa,broken"
    assert parent.data.params["budget"] == "60"
    cells = {r.data.params["optimizer"]: r for r in runs if r is not parent}
    assert set(cells) == {"gepa", "broken"}
    for cell in cells.values():
        assert cell.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert cell.data.params["task"] == "tiny" and cell.data.params["seed"] == "0"
    gepa = cells["gepa"]
    (record,) = [r for r in result.records if r.key.optimizer == "gepa"]
    assert gepa.info.status == "FINISHED"
    assert gepa.data.params["fingerprint"] == record.key.fingerprint
    assert record.baseline_test is not None and record.optimized_test is not None
    m = gepa.data.metrics
    assert m["seed_test_score"] == record.baseline_test.score
    assert m["optimized_test_score"] == record.optimized_test.score
    assert m["rollouts"] == record.rollouts and m["optimizer_lm_calls"] >= 1
    # policyopt's own optimizer streamed its events into the cell's run
    assert gepa.data.params["settings.minibatch_size"]
    steps = [h.step for h in client.get_metric_history(gepa.info.run_id, "val_score")]
    assert steps and steps == sorted(steps)
    names = {a.path for a in client.list_artifacts(gepa.info.run_id)}
    assert {"best_prompt.txt", "candidates.json"} <= names
    broken = cells["broken"]
    assert broken.info.status == "FAILED"
    assert broken.data.tags["policyopt.error"] == "RuntimeError: the peer blew up"


@pytest.mark.parametrize("command", ["bench", "demo"])
def test_a_bad_mlflow_uri_is_one_line_before_any_model(command: str, tmp_path: Path) -> None:
    folder = tmp_path / "dir.db"
    folder.mkdir()
    args = ["--out", str(tmp_path)] if command == "bench" else ["--run-dir", str(tmp_path / "r")]
    result = CliRunner().invoke(app, [command, *args, "--mlflow", str(folder)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --mlflow: MLflow tracking URI")
    assert "not a database file" in lines[0]
    assert not (tmp_path / "bench.json").exists() and not (tmp_path / "r").exists()
