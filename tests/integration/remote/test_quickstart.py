"""The quick start of docs/job-server.md still works with the server's default (secure) policy.

Real processes on 127.0.0.1, started as the docs say: ``policyopt serve`` with no policy flag,
``policyopt task-app policyopt.remote.builtin:antonyms --api-key ...``, and
``policyopt job submit examples/jobs/antonyms_gepa.toml`` with the task key in the client's
environment. The job is accepted, the server reaches the task app (its default outbound policy
allows loopback, by address and as ``localhost``), and the job runs; then it is cancelled.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.remote.support import OWNER_KEY, wait_for
from tests.integration.remote.test_e2e import TASK_KEY, Proc, start_server, start_task_app

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[3]
JOBS = "/api/policy-optimization/online/jobs"


@pytest.fixture(scope="module")  # one task app (and its model) for both hosts
def task_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    app = start_task_app(tmp_path_factory.mktemp("task"))
    try:
        yield app
    finally:
        app.stop()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_the_quick_start_runs_a_job_with_the_default_policy(
    task_app: Proc, tmp_path: Path, host: str
) -> None:
    server = start_server(tmp_path)
    try:
        env = {
            **os.environ,
            "POLICYOPT_BACKEND_URL": server.url,
            "POLICYOPT_API_KEY": OWNER_KEY,
            "TASK_APP_API_KEY": TASK_KEY,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        }
        url = f"http://{host}:{task_app.port}"
        submitted = subprocess.run(
            [
                sys.executable,
                "-m",
                "policyopt.cli",
                "job",
                "submit",
                str(ROOT / "examples" / "jobs" / "antonyms_gepa.toml"),
                "--set",
                f"task_app.url={url}",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip().splitlines()[-1]
        headers = {"Authorization": f"Bearer {OWNER_KEY}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:

            def rollouts_ran() -> bool:
                body = http.get(f"{JOBS}/{job_id}/events").json()
                types = [e["type"] for e in body["events"]]
                assert "job.failed" not in types, body["events"][-1]
                return "rollouts.batch_done" in types or "rollouts.progress" in types

            wait_for(rollouts_ran, timeout=540, every=0.5)  # 3x room on a loaded machine
            assert http.post(f"/api/jobs/{job_id}/cancel").status_code == 200
    finally:
        server.stop()
