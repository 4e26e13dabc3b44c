"""Killing processes mid-job, quickly: a job server and a task app as real processes on
127.0.0.1 (rollouts over HTTP through TaskAppClient), with the keyword task and a scripted
reflection LM instead of the local model so that the kills land in seconds.

The server SIGKILLed mid-job and restarted on the same files resumes the job from its journal
(no finished rollout paid again, checked against the task app's own request log); the task app
SIGKILLed mid-job makes the job fail with the reason, in bounded time.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from policyopt.remote.client import PolicyOptimizationJob
from tests.integration.remote.support import (
    OWNER_KEY,
    ServedProcess,
    job_config,
    journal_keys,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.waits]

ROOT = Path(__file__).resolve().parents[3]
TASK_KEY = "kill-task-key"


class Child(ServedProcess):
    """A Python child process running ``code`` (``{port}`` filled in), stopped by PID."""

    def __init__(self, code: str, log: Path) -> None:
        super().__init__(lambda port: [sys.executable, "-c", code.format(port=port)], log, ROOT)


def start_task_app(tmp_path: Path, name: str) -> Child:
    code = (
        "import logging, uvicorn\n"
        "from tests.integration.remote.support import keyword_app\n"
        f"uvicorn.run(keyword_app(api_key={TASK_KEY!r}), host='127.0.0.1', port={{port}},"
        " log_level='info')\n"
    )
    child = Child(code, tmp_path / f"{name}.log")
    child.wait_healthy({"Authorization": f"Bearer {TASK_KEY}"})
    return child


def start_server(root: Path, name: str) -> Child:
    code = (
        "from tests.integration.remote.support import serve_scripted\n"
        f"serve_scripted({{port}}, {str(root)!r})\n"
    )
    child = Child(code, root / f"{name}.log")
    child.wait_healthy({"Authorization": f"Bearer {TASK_KEY}"})
    return child


@pytest.fixture
def task_app(tmp_path: Path) -> Iterator[Child]:
    child = start_task_app(tmp_path, "task")
    try:
        yield child
    finally:
        child.stop()


def rollout_requests(log: Path) -> int:
    return log.read_text().count('"POST /rollout HTTP/1.1" 200')


def test_server_sigkill_mid_job_resumes_without_repaying(task_app: Child, tmp_path: Path) -> None:
    config = job_config(url=task_app.url, task_key=TASK_KEY, max_rollouts=150, n_test=0)
    server = start_server(tmp_path, "first")
    try:
        with PolicyOptimizationJob.from_dict(config, server.url, OWNER_KEY) as job:
            job_id = job.submit()
        run_dir = tmp_path / "runs" / job_id
        wait_for(lambda: len(journal_keys(run_dir)) >= 40, timeout=240, every=0.01)
        server.kill()
    finally:
        server.stop()
    before = journal_keys(run_dir)
    paid_before = rollout_requests(task_app.log)
    assert 40 <= len(before) < 150
    server = start_server(tmp_path, "second")
    try:
        with PolicyOptimizationJob.from_job_id(job_id, server.url, OWNER_KEY) as job:
            result = job.stream_until_complete(timeout=300)
            events = job.get_events(limit=5000)
    finally:
        server.stop()
    assert result.succeeded, result.error
    after = journal_keys(run_dir)
    assert after[: len(before)] == before and len(after) == len(set(after))
    # what the task app served: every journaled rollout once, plus at most the few that were
    # in flight when the server died (finished at the task app, never journaled)
    served = rollout_requests(task_app.log)
    assert len(after) <= served <= len(after) + 4, (served, len(after), paid_before)
    types = [e.type for e in events]
    assert "job.requeued" in types and types.count("job.started") == 2
    resumed = [e.data["resumed_rollouts"] for e in events if e.type == "run.started"]
    assert resumed[-1] >= len(before)
    # a rollout started before the kill counts as paid even though its result was lost (the
    # engine journals a start record first: the budget stays exact across kills)
    assert len(after) <= result.progress.rollouts_used <= len(after) + 4


def test_task_app_sigkill_mid_job_fails_the_job_with_the_reason(tmp_path: Path) -> None:
    app = start_task_app(tmp_path, "doomed")
    server = start_server(tmp_path, "server")
    try:
        config = job_config(url=app.url, task_key=TASK_KEY, max_rollouts=2000)
        with PolicyOptimizationJob.from_dict(config, server.url, OWNER_KEY) as job:
            job.submit()
            wait_for(lambda: job.get_status().progress.rollouts_used >= 30, timeout=240)
            app.kill()
            killed = time.monotonic()
            result = job.stream_until_complete(timeout=300)
            took = time.monotonic() - killed
    finally:
        app.stop()
        server.stop()
    assert result.failed, result.status
    assert result.error is not None
    assert "max_errors" in result.error and "TaskAppError" in result.error
    assert took < 60, took
    assert json.dumps(result.error)  # a plain string the client can show
