"""A job process under the owner's memory limit (issue 26): ``max_job_memory_mib``.

The jobs run in child processes (what ``policyopt serve`` runs) with a task-app client that
lives in the job's process and keeps what it allocates, as a leaking optimizer or a huge
answer kept in memory would.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from policyopt import Program, Score
from policyopt.errors import ConfigError
from policyopt.remote._serving import ServerThread
from policyopt.remote.server.app import create_app
from policyopt.remote.server.job_process import resident_bytes
from policyopt.remote.server.policy import ServerPolicy
from tests.integration.remote.support import OWNER_KEY, FreshProposals, job_config, wait_for

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

JOBS = "/api/policy-optimization/online/jobs"
LIMIT_MIB = 400


class HungryTaskApp:
    """A picklable task-app factory whose client keeps ``mib`` MiB per rollout (written, so
    resident) in the job's process."""

    def __init__(self, mib: int) -> None:
        self.mib = mib

    def __call__(self, config: Any) -> _HungryClient:
        return _HungryClient(self.mib)


class _HungryClient:
    def __init__(self, mib: int) -> None:
        self.mib = mib
        self.kept: list[bytes] = []

    def health(self) -> dict[str, Any]:
        return {"status": "ok"}

    def program(self, prompt: str, policy: Any = None) -> Program:
        return Program(prompt, self.evaluate)

    def evaluate(self, prompt: Any, example: dict[str, Any]) -> Score:
        self.kept.append(b"\x01" * (self.mib << 20))
        time.sleep(0.02)
        return Score(0.0, feedback="Not yet right.")

    def close(self) -> None:
        self.kept.clear()


def serve(tmp_path: Path, mib: int) -> ServerThread:
    app = create_app(
        tmp_path / "jobs.db",
        tmp_path / "runs",
        [OWNER_KEY],
        reflection_lm_factory=FreshProposals(),
        task_app_factory=HungryTaskApp(mib),
        isolation="process",
        job_niceness=0,
        policy=ServerPolicy(max_job_memory_mib=LIMIT_MIB),
    )
    return ServerThread(app).start()


@pytest.fixture
def http_for() -> Iterator[Any]:
    opened: list[tuple[ServerThread, httpx.Client]] = []

    def make(server: ServerThread) -> httpx.Client:
        client = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {OWNER_KEY}"}, timeout=30
        )
        opened.append((server, client))
        return client

    yield make
    for server, client in opened:
        client.close()
        server.stop(timeout=30)


def run_job(http: httpx.Client, max_rollouts: int) -> dict[str, Any]:
    config = job_config(max_rollouts=max_rollouts, n_test=0, section={"n_jobs": 2})
    response = http.post(JOBS, json=config)
    assert response.status_code == 201, response.text
    job_id = response.json()["job_id"]
    return dict(
        wait_for(
            lambda: (
                (s := http.get(f"{JOBS}/{job_id}").json())["status"]
                in ("succeeded", "failed", "cancelled")
                and s
            ),
            timeout=120,
        )
    )


def test_a_job_past_the_memory_limit_fails_with_that_reason(tmp_path: Path, http_for: Any) -> None:
    """16 MiB kept per rollout: the job's process passes 400 MiB within ~25 rollouts of its 300
    and is stopped; the server goes on serving."""
    http = http_for(serve(tmp_path, mib=16))
    status = run_job(http, max_rollouts=300)
    assert status["status"] == "failed", status
    assert f"the job exceeded the memory limit of {LIMIT_MIB} MiB" in status["error"]
    assert status["progress"]["rollouts_used"] < 300
    assert http.get("/health").status_code == 200


def test_a_job_within_the_memory_limit_is_not_stopped(tmp_path: Path, http_for: Any) -> None:
    """The control: the same job keeping nothing ends normally under the same limit."""
    http = http_for(serve(tmp_path, mib=0))
    status = run_job(http, max_rollouts=40)
    assert status["status"] == "succeeded", status


def test_the_data_segment_cap_fails_one_huge_allocation_in_the_job_process() -> None:
    """What the 0.1 s reads of resident memory could miss (one allocation of 1 GiB at once)
    fails in the job's process: its data segment is capped at twice the limit (200 MiB here)."""
    code = (
        "from policyopt.remote.server.job_process import _limit_data\n"
        "_limit_data(100)\n"
        "try:\n"
        "    b = bytearray(1 << 30)\n"
        "    print('allocated')\n"
        "except MemoryError:\n"
        "    print('refused')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "refused", done.stdout + done.stderr


def test_a_memory_limit_needs_process_isolation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs isolation='process'"):
        create_app(
            tmp_path / "jobs.db",
            tmp_path / "runs",
            [OWNER_KEY],
            policy=ServerPolicy(max_job_memory_mib=LIMIT_MIB),
            isolation="thread",
        )
    assert resident_bytes(10**9) is None  # no such process
