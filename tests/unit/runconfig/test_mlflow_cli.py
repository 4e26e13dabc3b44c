"""``policyopt optimize --mlflow``: the run's true start and end times (not when the writer
thread got to them), the task model's usage beside the optimizer LM's (``lm.task.*`` and
``lm.reflection.*``), and the MLflow run id printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fake_openai import fake_openai
from tests.unit.runconfig._project import CONFIG
from tests.unit.runconfig.test_optimize_cli import invoke


def test_mlflow_run_times_usage_per_role_and_id(project: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{project / 'mlflow.db'}"
    with fake_openai(default="cold") as server:
        text = CONFIG.replace('task = "prog:task_lm"', 'task = "openai/fake-model"').replace(
            "[policy_optimization.budget]",
            f'task_kwargs = {{api_base = "{server.api_base}", api_key = "sk-test"}}\n\n'
            "[policy_optimization.budget]",
        )
        (project / "hosted.toml").write_text(text)
        result = invoke(
            "optimize", str(project / "hosted.toml"), "--no-progress", "--mlflow", store
        )
        paid = len(server.requests)
    assert result.exit_code == 0, result.output
    client = MlflowClient(tracking_uri=store)
    (run,) = client.search_runs([client.get_experiment_by_name("policyopt").experiment_id])
    assert f"Logged to MLflow {store} as run {run.info.run_id}." in result.stdout
    metrics = run.data.metrics
    assert metrics["lm.task.calls"] == paid > 0  # the task model's calls: one per rollout
    assert metrics["lm.reflection.calls"] >= 1
    stamps = [
        m.timestamp for key in metrics for m in client.get_metric_history(run.info.run_id, key)
    ]
    # the run starts before its first metric and ends after its last
    assert run.info.start_time <= min(stamps) and run.info.end_time >= max(stamps)
