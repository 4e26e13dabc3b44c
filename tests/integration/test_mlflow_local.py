"""`policyopt demo --mlflow` on the real local model, read back from the SQLite store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = [pytest.mark.integration, pytest.mark.slow]


# 365 s on the loaded 2-core box (load average 25; the model loads twice, the store is created,
# three prompts are scored on test): room for a 3x slowdown
@pytest.mark.timeout(1800)
def test_demo_logs_a_real_run_to_mlflow(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir, out = tmp_path / "run", tmp_path / "demo.json"
    command = [
        *(sys.executable, "-m", "policyopt.cli", "demo", "--limit", "4", "--budget", "16"),
        *("--run-dir", str(run_dir), "--json", str(out), "--no-progress", "--mlflow", uri),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=1700, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Logged to MLflow" in proc.stdout
    assert "WARNING" not in proc.stderr and "Traceback" not in proc.stderr
    payload = json.loads(out.read_text())
    result = payload["result"]
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments() if e.name == "policyopt"]
    )
    assert run.info.status == "FINISHED" and run.info.run_name == "demo antonyms gepa"
    p, m = run.data.params, run.data.metrics
    assert p["task"] == "antonyms" and p["optimizer"] == "gepa" and p["max_rollouts"] == "16"
    assert m["test_seed"] == payload["rows"][0]["test_accuracy"]
    assert m["test_optimized"] == payload["rows"][1]["test_accuracy"]
    assert m["n_rollouts"] == result["n_rollouts"] <= 16
    assert m["lm_calls"] == result["lm_usage"]["reflection"]["calls"]
    assert m["task_lm_calls"] >= result["n_rollouts"]
    vals = client.get_metric_history(run.info.run_id, "val_score")
    means = [sum(c["val_scores"].values()) / len(c["val_scores"]) for c in result["candidates"]]
    assert [h.value for h in vals] == pytest.approx(means)
    best = client.get_metric_history(run.info.run_id, "best_score")
    assert best[-1].value == result["best_score"] and best[-1].step == result["n_rollouts"]
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"best_prompt.txt", "result.json", "candidates.json", "plots"} <= names
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/curve.png", "plots/lineage.png", "plots/coverage.png"} <= plots
