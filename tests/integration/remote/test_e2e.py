"""End to end on 127.0.0.1: ``policyopt serve`` and ``policyopt task-app`` as real processes,
the built-in antonyms task on the embedded local model (task and reflection LM), jobs submitted
and followed with PolicyOptimizationJob.

GEPA and MIPRO jobs (submit, stream, results) and cancel mid-run. The server and the task app
SIGKILLed mid-job are in test_kill.py (real processes, a scripted reflection LM so the kill lands
in seconds; it also counts what the task app served): on the local model those tests mostly
measured how slow reflection is under load.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from policyopt.errors import MissingDependencyError
from policyopt.gepa.reflection import COMPACT_TEMPLATE
from policyopt.lm.local_models import check_installed
from policyopt.remote.client import JobEvent, PolicyOptimizationJob
from policyopt.tasks import get_task
from tests.integration.remote.support import (
    OWNER_KEY,
    ServedProcess,
    wait_for,
)

# the timeout is generous: rollouts of the local model slow down a lot on a busy 2-core machine
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]

TASK_KEY = "e2e-task-key"
#: generous: the local model shares 2 cores with everything else on the machine
STREAM_S = 800.0  # a GEPA job took 171 s on a busy CI clone: room for a 3x slowdown more
TASK = get_task("antonyms")
TRAIN = [e["id"] for e in TASK.train][:4]
VAL = [e["id"] for e in TASK.val][:3]
TEST = [e["id"] for e in TASK.test][:2]


class Proc(ServedProcess):
    """A ``policyopt`` subcommand in its own process, stopped by PID."""

    def __init__(self, args: list[str], log: Path) -> None:
        super().__init__(
            lambda port: [sys.executable, "-m", "policyopt.cli", *args, "--port", str(port)], log
        )


def start_task_app(tmp_path: Path, name: str = "task") -> Proc:
    app = Proc(
        ["task-app", "policyopt.remote.builtin:antonyms", "--api-key", TASK_KEY],
        tmp_path / f"{name}.log",
    )
    app.wait_healthy({"Authorization": f"Bearer {TASK_KEY}"})
    return app


def start_server(root: Path, name: str = "server", *flags: str) -> Proc:
    server = Proc(
        [
            "serve",
            *flags,
            "--db",
            str(root / "jobs.db"),
            "--data-dir",
            str(root / "runs"),
            "--api-key",
            OWNER_KEY,
            "--max-jobs",
            "2",
            "--log-level",
            "warning",
        ],
        root / f"{name}.log",
    )
    server.wait_healthy()
    return server


@pytest.fixture(scope="module")
def task_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    app = start_task_app(tmp_path_factory.mktemp("task"))
    try:
        yield app
    finally:
        app.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Proc]:
    proc = start_server(tmp_path)
    try:
        yield proc
    finally:
        proc.stop()


def config(task_url: str, algorithm: str = "gepa", budget: int = 24) -> dict[str, Any]:
    section: dict[str, Any] = (
        {
            "n_jobs": 4,
            "minibatch_size": 2,
            "reflection_template": COMPACT_TEMPLATE,
            "max_prompt_chars": 300,
        }
        if algorithm == "gepa"
        else {
            "n_jobs": 4,
            "num_candidates": 2,
            "num_trials": 2,
            "minibatch_size": 4,
            "max_bootstrapped_demos": 0,
            "max_labeled_demos": 0,
        }
    )
    return {
        "policy_optimization": {
            "algorithm": algorithm,
            "task_app": {"url": task_url, "api_key": TASK_KEY},
            "initial_prompt": TASK.seed_prompt,
            "ids": {"train": TRAIN, "val": VAL, "test": TEST},
            "budget": {"max_rollouts": budget},
            "models": {"reflection": "local"},
            algorithm: section,
        }
    }


# Each test below is a class of its own: ./scripts/test keeps a module's tests on one xdist worker
# (--dist loadscope) but splits a module by class, and these in a row were the suite's longest
# chain (each worker that runs one starts its own task app).
def _job_on_the_local_model(task_app: Proc, server: Proc, algorithm: str) -> None:
    seen: list[JobEvent] = []
    with PolicyOptimizationJob.from_dict(
        config(task_app.url, algorithm), server.url, OWNER_KEY
    ) as job:
        job.submit()
        result = job.stream_until_complete(timeout=STREAM_S, on_event=seen.append)
    assert result.succeeded, result.error
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
    types = {e.type for e in seen}
    assert {"job.started", "run.started", "candidate.new_best", "test.evaluated"} <= types
    assert result.best_prompt and result.top_prompts[0].rank == 1
    assert result.progress.rollouts_used <= 24
    assert result.test is not None and set(result.test) >= {"seed", "best"}
    assert result.usage is not None and result.usage["lm_usage"]


class TestGepaJob:
    def test_job_on_the_local_model(self, task_app: Proc, server: Proc) -> None:
        _job_on_the_local_model(task_app, server, "gepa")


class TestMiproJob:
    def test_job_on_the_local_model(self, task_app: Proc, server: Proc) -> None:
        _job_on_the_local_model(task_app, server, "mipro")


class TestCancel:
    def test_cancel_mid_run(self, task_app: Proc, server: Proc) -> None:
        _cancel_mid_run(task_app, server)


def _second_model_installed() -> bool:
    try:
        check_installed(SECOND_MODEL)
    except MissingDependencyError:
        return False
    return True


SECOND_MODEL = "local:qwen2.5-coder-0.5b"


@pytest.mark.skipif(
    not _second_model_installed(), reason="the second local model (opt-in) is not installed"
)
class TestSecondLocalModel:
    def test_a_job_on_the_granted_second_model(self, task_app: Proc, tmp_path: Path) -> None:
        """The owner grants ``local:NAME``; a job naming it runs its reflection on that model."""
        server = start_server(tmp_path, "server", "--model", "local", "--model", SECOND_MODEL)
        try:
            table = config(task_app.url)
            table["policy_optimization"]["models"]["reflection"] = SECOND_MODEL
            with PolicyOptimizationJob.from_dict(table, server.url, OWNER_KEY) as job:
                job.submit()
                result = job.stream_until_complete(timeout=STREAM_S)
        finally:
            server.stop()
        assert result.succeeded, result.error
        assert result.usage is not None and result.usage["lm_usage"]["reflection"]["calls"] > 0


def _cancel_mid_run(task_app: Proc, server: Proc) -> None:
    with PolicyOptimizationJob.from_dict(
        config(task_app.url, budget=400), server.url, OWNER_KEY
    ) as job:
        job.submit()
        wait_for(lambda: job.get_status().progress.rollouts_used >= 4, timeout=STREAM_S)
        job.cancel("e2e: enough")
        result = job.stream_until_complete(timeout=STREAM_S)
    assert result.cancelled and result.final
    assert result.progress.rollouts_used < 400 and result.top_prompts
