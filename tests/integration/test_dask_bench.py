"""Benchmark cells as Dask tasks on a real LocalCluster: the same records as a local run, a
rerun that resumes without running a cell again, and the CLI's --dask."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from policyopt.bench import load_records, run_benchmark
from policyopt.bench.dask_cells import DaskSession, portable
from policyopt.errors import ConfigError
from policyopt.rollout.dask_backend import local_cluster
from tests.unit.bench.test_harness import reflection_lm, settings, task_lm, tiny_task

distributed = pytest.importorskip("distributed")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    cluster = local_cluster(n_workers=2, threads_per_worker=1)
    try:
        with distributed.Client(cluster, set_as_default=False) as dask_client:
            yield dask_client
    finally:
        cluster.close()


def _bench(out: Path, dask: Any = None) -> Any:
    return run_benchmark(
        settings(seeds=[0], n_jobs=2, parallel_cells=2),
        out,
        task_lm=task_lm(),
        reflection_lm=reflection_lm(),
        tasks={"tiny": tiny_task()},
        dask=dask,
    )


def _same(record: Any) -> dict[str, Any]:
    """A record without what differs between equal runs (times)."""
    data = json.loads(record.model_dump_json())
    for name in ("wall_s", "search_wall_s", "details"):
        data.pop(name, None)
    return data


def test_cells_on_dask_record_what_a_local_run_records_and_resume(
    client: Any, tmp_path: Path
) -> None:
    local = _bench(tmp_path / "local")
    with distributed.get_task_stream(client) as stream:
        remote = _bench(tmp_path / "dask", dask=client)
    cells = [t["key"] for t in stream.data if str(t["key"]).startswith("policyopt-cell-")]
    assert len(cells) == len(remote.ran) == 2  # both cells ran on the workers
    assert [_same(r) for r in remote.records] == [_same(r) for r in local.records]
    assert all(r.status == "ok" and r.optimized_test.score == 1.0 for r in remote.records)

    written = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "dask" / "cells").iterdir()}
    with distributed.get_task_stream(client) as stream:
        again = _bench(tmp_path / "dask", dask=client)
    assert again.ran == [] and len(again.skipped) == 2
    assert not stream.data  # nothing ran on the cluster
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "dask" / "cells").iterdir()} == (
        written
    )
    assert load_records(tmp_path / "dask") == remote.records


def test_an_lm_that_cannot_travel_is_one_clear_error() -> None:
    import threading

    class Locked:
        model = "locked"

        def __init__(self) -> None:
            self.lock = threading.Lock()

        def __call__(self, prompt: str) -> str:
            return prompt

    with pytest.raises(ConfigError, match="task LM \\(Locked\\) cannot be sent to Dask workers"):
        portable(Locked(), "task")


def test_dask_and_scheduler_exclude_each_other() -> None:
    with pytest.raises(ConfigError, match="not both"):
        DaskSession(local=True, address="tcp://127.0.0.1:1", n_workers=1).open()


def test_cli_dask_and_scheduler_together_is_one_error_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from policyopt.cli import app

    args = ["bench", "--tasks", "antonyms", "--optimizers", "gepa", "--seeds", "0"]
    args += ["--out", str(tmp_path), "--dask", "--scheduler", "tcp://127.0.0.1:1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "error: Give --dask (a local cluster) or --scheduler ADDRESS, not both." in (
        result.output
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cli_bench_dask_on_the_local_model_and_resume(tmp_path: Path) -> None:
    """`policyopt bench --dask` on the embedded model: the cell runs on a worker process that
    reaches the model's server over loopback; the rerun runs nothing."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "policyopt.cli", "bench", "--tasks", "antonyms"]
    command += ["--optimizers", "gepa", "--seeds", "0", "--budget", "14", "--limit", "3"]
    command += ["--n-jobs", "2", "--out", str(tmp_path), "--dask", "--no-plots"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=800, check=False)
    assert first.returncode == 0, first.stderr[-3000:]
    (record,) = load_records(tmp_path)
    assert record.status == "ok", record.error
    assert record.optimized_test is not None and record.optimized_test.n_examples == 3
    assert 0 < record.rollouts <= 14
    assert record.task_usage.calls > 0 and record.task_usage.prompt_tokens > 0
    assert record.task_usage.cost_usd == 0.0  # the embedded model is free, as in a local run
    assert record.optimizer_usage.calls > 0
    again = subprocess.run(command, capture_output=True, text=True, timeout=800, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 cells to run, 1 already finished" in again.stderr
    assert load_records(tmp_path) == [record]
