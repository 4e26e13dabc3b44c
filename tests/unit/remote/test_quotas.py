"""Per-key quotas of optimizer-LM calls (issue 26), over real HTTP (uvicorn on 127.0.0.1).

A job holds its stated optimizer-LM cap (``<algorithm>.max_lm_calls``) from its submit until
it ends; then its key is charged the calls it was billed (the run kit's ledger,
``OptimizationResult.lm_usage``), so what a job did not use is free again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from policyopt.remote._serving import ServerThread
from policyopt.remote.server.app import create_app
from policyopt.remote.server.policy import ServerPolicy
from tests.integration.remote.support import (
    OWNER_KEY,
    FreshProposals,
    ScriptedTaskApp,
    job_config,
    wait_for,
)

pytestmark = pytest.mark.timeout(180)

JOBS = "/api/policy-optimization/online/jobs"
TERMINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    app = create_app(
        tmp_path / "jobs.db",
        tmp_path / "runs",
        [OWNER_KEY],
        max_concurrent_jobs=1,
        task_app_factory=ScriptedTaskApp(delay=0.05).factory,  # the first job runs ~0.6 s
        reflection_lm_factory=FreshProposals(),  # never solves the task: calls until the cap
        policy=ServerPolicy(max_lm_calls_per_key=10),
    )
    thread = ServerThread(app).start()
    yield thread
    thread.stop(timeout=30)


def job(calls: int | None, rollouts: int = 400) -> dict[str, Any]:
    section: dict[str, Any] = {"n_jobs": 2, "minibatch_size": 2}
    if calls is not None:
        section["max_lm_calls"] = calls
    return job_config(max_rollouts=rollouts, n_test=0, section=section)


def test_a_job_holds_its_lm_call_cap_and_is_charged_what_it_spent(server: ServerThread) -> None:
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {OWNER_KEY}"}, timeout=30
    ) as http:
        response = http.post(JOBS, json=job(None))
        assert response.status_code == 422, response.text
        assert "gepa.max_lm_calls: required on this server" in response.json()["detail"]
        response = http.post(JOBS, json=job(11))
        assert response.status_code == 429 and "0 of its 10 calls" in response.json()["detail"]

        # a small rollout budget: the job ends before it can use its cap of 8 calls
        first = http.post(JOBS, json=job(8, rollouts=24))
        assert first.status_code == 201, first.text
        response = http.post(JOBS, json=job(3))  # 8 held + 3 > 10, while the first runs
        assert response.status_code == 429, response.text
        assert "hold 8 of its 10 calls" in response.json()["detail"]
        assert "2 left" in response.json()["detail"]

        def ended(job_id: str) -> dict[str, Any] | None:
            body = http.get(f"{JOBS}/{job_id}/results").json()
            return body if body["status"] in TERMINAL else None

        done = wait_for(lambda: ended(first.json()["job_id"]), 120)
        assert done["status"] == "succeeded", done
        spent = done["usage"]["lm_calls"]
        assert spent == sum(u["calls"] for u in done["usage"]["lm_usage"].values())
        assert done["stop_reason"] == "budget" and 1 <= spent < 8, done

        # charged what it was billed: 10 - spent are free again, not 10 - 8
        response = http.post(JOBS, json=job(10 - spent + 1))
        assert response.status_code == 429, response.text
        assert f"hold {spent} of its 10 calls" in response.json()["detail"]
        second = http.post(JOBS, json=job(10 - spent))
        assert second.status_code == 201, second.text
        http.post(f"{JOBS}/{second.json()['job_id']}/cancel")
        wait_for(lambda: ended(second.json()["job_id"]), 120)
