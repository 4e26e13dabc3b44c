"""SIGTERM to a job server with a running job and an open event stream: the process ends within
10 s, the job goes back to the queue, and the next server on the same files finishes it.

Real processes on 127.0.0.1: the server (``run_app``, what ``policyopt serve`` runs, with a
scripted reflection LM that always proposes a new prompt; jobs in threads, and in child
processes) and a task app whose rollouts take 0.05 s and never succeed, so the job is still
running when the signal comes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from policyopt.remote.client import PolicyOptimizationJob
from tests.integration.remote.support import OWNER_KEY, job_config, journal_keys, wait_for
from tests.integration.remote.test_kill import TASK_KEY, Child

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.waits]

TASK_APP = """
import time, uvicorn
from policyopt import Program, Score
from policyopt.remote.taskapp.app import task_app
from tests.integration.remote.support import keyword_dataset

def evaluate(prompt, example):
    time.sleep(0.05)
    return Score(0.0, feedback="Not yet right.")

app = task_app(Program("Solve the task.", evaluate), keyword_dataset(50, 50, 50), api_key={key!r})
uvicorn.run(app, host="127.0.0.1", port={{port}}, log_level="warning")
"""
SERVER = """
from policyopt.remote.server.app import create_app, run_app
from tests.integration.remote.support import FreshProposals

app = create_app(
    {root!r} + "/jobs.db", {root!r} + "/runs", [{key!r}],
    reflection_lm_factory=FreshProposals(), isolation={isolation!r},
)
run_app(app, host="127.0.0.1", port={{port}}, log_level="warning")
"""


def start_server(root: Path, name: str, isolation: str) -> Child:
    code = SERVER.format(root=str(root), key=OWNER_KEY, isolation=isolation)
    child = Child(code, root / f"{name}.log")
    child.wait_healthy()
    return child


@pytest.fixture
def task_app(tmp_path: Path) -> Iterator[Child]:
    child = Child(TASK_APP.format(key=TASK_KEY), tmp_path / "task.log")
    try:
        child.wait_healthy({"Authorization": f"Bearer {TASK_KEY}"})
        yield child
    finally:
        child.stop()


JOBS = "/api/policy-optimization/online/jobs"


def _hold_stream(url: str, job_id: str, stop: threading.Event) -> None:
    """An SSE client that stays connected until the server goes away."""
    headers = {"Authorization": f"Bearer {OWNER_KEY}"}
    try:
        with (
            httpx.Client(timeout=None) as client,
            client.stream("GET", f"{url}{JOBS}/{job_id}/events/stream", headers=headers) as r,
        ):
            for _ in r.iter_lines():
                if stop.is_set():
                    return
    except httpx.HTTPError:
        return


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_sigterm_stops_the_server_within_10_s_and_the_job_resumes(
    task_app: Child, tmp_path: Path, isolation: str
) -> None:
    config = job_config(
        url=task_app.url,
        task_key=TASK_KEY,
        max_rollouts=400,
        n_test=0,
        section={"n_jobs": 2},
    )
    server = start_server(tmp_path, "first", isolation)
    stop = threading.Event()
    try:
        with PolicyOptimizationJob.from_dict(config, server.url, OWNER_KEY) as job:
            job_id = job.submit()
        run_dir = tmp_path / "runs" / job_id
        wait_for(lambda: len(journal_keys(run_dir)) >= 20, timeout=60, every=0.01)
        reader = threading.Thread(target=_hold_stream, args=(server.url, job_id, stop))
        reader.start()
        time.sleep(0.3)  # the stream is open and the job runs
        sent = time.monotonic()
        os.kill(server.proc.pid, signal.SIGTERM)
        code = server.proc.wait(30)
        took = time.monotonic() - sent
    finally:
        stop.set()
        server.stop()
    assert took <= 10.0, f"SIGTERM took {took:.1f} s to stop the server"
    assert code in (0, -signal.SIGTERM), code  # uvicorn re-raises the signal after a clean stop
    with sqlite3.connect(tmp_path / "jobs.db") as db:
        status = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
        types = [r[0] for r in db.execute("SELECT type FROM events WHERE job_id = ?", (job_id,))]
    assert status == "queued" and types[-1] == "job.suspended", (status, types[-3:])
    before = journal_keys(run_dir)
    assert 20 <= len(before) < 400

    server = start_server(tmp_path, "second", isolation)
    try:
        with PolicyOptimizationJob.from_job_id(job_id, server.url, OWNER_KEY) as job:
            result = job.stream_until_complete(timeout=360)  # room for a 3x slowdown
    finally:
        server.stop()
    assert result.succeeded, result.error
    assert len(before) < result.progress.rollouts_used <= 400
    after = journal_keys(run_dir)
    assert after[: len(before)] == before and len(after) == len(set(after))


WEDGED = """
import time
from fastapi import FastAPI
from policyopt.remote.server.app import run_app

app = FastAPI()

@app.get("/health")
def health():
    return {{"status": "ok"}}

@app.get("/wedge")
async def wedge():
    time.sleep(120)  # holds the event loop, as an O(num_trials) check on it once did

run_app(app, host="127.0.0.1", port={port}, log_level="warning")
"""


def test_sigterm_ends_the_process_within_10_s_even_with_a_wedged_event_loop(
    tmp_path: Path,
) -> None:
    """The event loop is stuck in a request: uvicorn can no longer act on the signal, and
    SIGTERM used to be ignored until the request ended (60 s and more: only SIGKILL worked)."""
    child = Child(WEDGED, tmp_path / "wedged.log")
    try:
        child.wait_healthy()
        wedge = threading.Thread(target=_get_quietly, args=(f"{child.url}/wedge",), daemon=True)
        wedge.start()
        time.sleep(1.0)  # the route is running
        started = time.monotonic()
        os.kill(child.proc.pid, signal.SIGTERM)
        child.proc.wait(timeout=30)
        took = time.monotonic() - started
        assert took < 10.0, took
    finally:
        child.stop()


def _get_quietly(url: str) -> None:
    with contextlib.suppress(httpx.TransportError):
        httpx.get(url, timeout=60)
