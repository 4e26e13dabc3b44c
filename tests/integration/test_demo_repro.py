"""The main job is reproducible: the same `policyopt demo` twice, once beside a CPU hog, same JSON.

Run-to-run differences on the local model came from llama.cpp's continuous batching (an answer
depended on which other requests shared its batch, so on timing) and from timeouts under load.
This runs a small demo and then again on a busy machine (beside a CPU hog, or beside the
suite's other workers when they already keep every core busy), and compares everything in
the output that is not a clock reading: the prompts, every candidate's scores, the test rows,
rollouts, LM calls and tokens. The quiet run is also the suite's check of what `policyopt demo`
prints and writes (it was a separate demo run in test_cli.py), and the loaded run logs to MLflow
(read back from the SQLite store; it was a third demo run in test_mlflow_local.py): tracking must
not change a figure either.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from policyopt.lm.local import busy_threads

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]

_HOG = "import time\nend = time.time() + 3600\nwhile time.time() < end:\n    sum(range(10000))\n"


def _demo(
    out: Path, hash_seed: str, *extra: str
) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    command = [
        sys.executable, "-m", "policyopt.cli", "demo", "--budget", "14", "--limit", "4",
        "--seed", "0", "--n-jobs", "4", "--no-progress", "--json", str(out), *extra,
    ]  # fmt: skip
    # each run its own string hashing, so nothing may follow a set's order
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONHASHSEED": hash_seed}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(out.read_text(encoding="utf-8")), done


def _hogs_unless_busy() -> list[subprocess.Popen[bytes]]:
    """A CPU hog for the loaded run, unless the machine is already busier than its cores (in
    the suite the other workers' real-model runs share the CPU with it: a hog would only slow
    them down)."""
    if busy_threads() >= len(os.sched_getaffinity(0)):
        return []
    return [subprocess.Popen([sys.executable, "-c", _HOG])]


def _without_clocks(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload minus wall-clock readings and the run dir's name (the only fields allowed to
    differ)."""
    result = dict(payload["result"])
    for key in ("wall_time_s", "details"):
        result.pop(key, None)
    # the run dirs differ by name only
    result["settings"] = {k: v for k, v in result.get("settings", {}).items() if k != "run_dir"}
    result["candidates"] = [
        {k: v for k, v in c.items() if "time" not in k} for c in result["candidates"]
    ]
    return {**payload, "result": result, "wall_time_s": None}


def test_demo_twice_once_on_a_busy_machine_gives_the_same_json(tmp_path: Path) -> None:
    # each run keeps its run dir (the MLflow run's plots are drawn from it)
    quiet, done = _demo(tmp_path / "quiet.json", "1", "--run-dir", str(tmp_path / "quiet"))
    printed = done.stdout
    # what the demo reports: the three prompts' test accuracy and what GEPA spent
    assert "accuracy on the held-out test split" in printed
    assert "GEPA spent" in printed and "optimized (GEPA)" in printed
    assert [row["prompt"] for row in quiet["rows"]] == [
        "seed",
        "optimized (GEPA)",
        "hand-written reference",
    ]
    assert quiet["result"]["optimizer"] == "gepa" and quiet["result"]["n_rollouts"] <= 14
    assert quiet["result"]["lm_usage"]["reflection"]["calls"] >= 1
    assert quiet["result"]["n_rollouts"] > 4  # beyond the seed's 4 val rollouts: a proposal scored
    hogs = _hogs_unless_busy()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    try:
        loaded, tracked = _demo(
            tmp_path / "loaded.json", "2", "--run-dir", str(tmp_path / "loaded"), "--mlflow", uri
        )
    finally:
        for hog in hogs:  # stop only what this test started, by its handle
            hog.kill()
            hog.wait()
    assert quiet["result"]["n_rollouts"] > 0
    a, b = _without_clocks(quiet), _without_clocks(loaded)
    assert a["rows"] == b["rows"]
    assert a["result"]["best_prompt"] == b["result"]["best_prompt"]
    _check_mlflow(uri, loaded, tracked)
    # everything else too: the usage counts differed in about half the runs until the echo
    # guard's retry prompt stopped depending on the process's string hashing (a set's order)
    assert a == b


def _check_mlflow(
    uri: str, payload: dict[str, Any], done: subprocess.CompletedProcess[str]
) -> None:
    """The loaded demo's MLflow run, read back: params, test metrics, curves, artifacts."""
    assert "Logged to MLflow" in done.stdout
    assert "WARNING" not in done.stderr and "Traceback" not in done.stderr
    result = payload["result"]
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments() if e.name == "policyopt"]
    )
    assert run.info.run_id in done.stdout  # the CLI names the run it wrote
    assert run.info.status == "FINISHED" and run.info.run_name == "demo antonyms gepa"
    p, m = run.data.params, run.data.metrics
    assert p["task"] == "antonyms" and p["optimizer"] == "gepa" and p["max_rollouts"] == "14"
    assert m["test_seed"] == payload["rows"][0]["test_accuracy"]
    assert m["test_optimized"] == payload["rows"][1]["test_accuracy"]
    assert m["n_rollouts"] == result["n_rollouts"] <= 14
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
