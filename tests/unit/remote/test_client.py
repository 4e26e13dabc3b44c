"""PolicyOptimizationJob and the ``policyopt job`` CLI against a real job server and a real task
app (both uvicorn on 127.0.0.1; rollouts go over HTTP through TaskAppClient)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from policyopt import Program
from policyopt.cli import app as cli_app
from policyopt.errors import ConfigError
from policyopt.remote import JobResults, PolicyOptimizationJob
from policyopt.remote._serving import ServerThread, serve_in_thread
from policyopt.remote.client import (
    JobError,
    JobEvent,
    JobStatus,
    JobTimeoutError,
    normalize_status,
    parse_sse,
)
from policyopt.remote.server.app import create_app
from policyopt.remote.store import JobState
from policyopt.remote.taskapp.app import task_app
from tests.integration.remote.support import (
    OTHER_KEY,
    OWNER_KEY,
    job_config,
    keyword_dataset,
    keyword_evaluate,
    scripted_reflection,
)

TASK_KEY = "task-app-key-42"


class Counting:
    """The keyword task's evaluate behind the task app, counting calls (optionally slow)."""

    def __init__(self) -> None:
        self.calls = 0
        self.delay = 0.0

    def __call__(self, prompt: Any, example: dict[str, Any]) -> Any:
        import time

        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        return keyword_evaluate(prompt, example)


@pytest.fixture
def evaluate() -> Counting:
    return Counting()


@pytest.fixture
def task_url(evaluate: Counting) -> Iterator[str]:
    app = task_app(Program("Solve the task.", evaluate), keyword_dataset(), api_key=TASK_KEY)
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[str]:
    app = create_app(
        tmp_path / "jobs.db",
        tmp_path / "runs",
        [OWNER_KEY, OTHER_KEY],
        reflection_lm_factory=scripted_reflection,
        keepalive_s=0.5,
        poll_interval=0.05,
    )
    server = ServerThread(app).start()
    yield server.url
    server.stop(timeout=30)


def config(task_url: str, **kw: Any) -> dict[str, Any]:
    return job_config(url=task_url, task_key=TASK_KEY, **kw)


def test_submit_stream_results_end_to_end(backend: str, task_url: str, evaluate: Counting) -> None:
    seen: list[JobEvent] = []
    bests: list[JobEvent] = []
    with PolicyOptimizationJob.from_dict(config(task_url), backend, OWNER_KEY) as job:
        assert job.job_id is None and job.algorithm == "gepa"
        job_id = job.submit()
        assert job.job_id == job_id
        with pytest.raises(JobError, match="already submitted"):
            job.submit()
        result = job.stream_until_complete(
            timeout=60, handlers={"candidate.new_best": bests.append}, on_event=seen.append
        )
        assert isinstance(result, JobResults)
        assert result.succeeded and result.is_terminal and not result.failed and result.final
        assert result.status is JobState.SUCCEEDED
        assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
        assert seen[-1].type == "job.succeeded" and seen[-1].terminal
        assert bests and all(e.type == "candidate.new_best" for e in bests)
        assert result.best_score is not None and result.best_score > 0
        assert job.get_best_prompt_text() == result.best_prompt == result.top_prompts[0].prompt
        assert job.get_best_prompt_text(2) == result.top_prompts[1].prompt
        assert job.get_best_prompt_text(10_000) is None
        with pytest.raises(ConfigError, match="rank"):
            job.get_best_prompt_text(0)
        usage = result.usage or {}
        assert evaluate.calls == usage["rollouts"] + usage["test_rollouts"]
        assert result.test is not None and result.test["best"] >= result.test["seed"]
    with PolicyOptimizationJob.from_job_id(job_id, backend, OWNER_KEY) as again:
        status = again.get_status()
        assert isinstance(status, JobStatus) and status.succeeded
        assert again.poll_until_complete(timeout=5, interval=0.1).best_prompt == result.best_prompt
        assert [e.seq for e in again.get_events(since_seq=len(seen) - 1)] == [len(seen)]


def test_poll_mipro_and_environment_settings(
    backend: str, task_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLICYOPT_BACKEND_URL", backend)
    monkeypatch.setenv("POLICYOPT_API_KEY", OWNER_KEY)
    statuses: list[JobStatus] = []
    with PolicyOptimizationJob.from_dict(config(task_url, algorithm="mipro")) as job:
        job.submit()
        result = job.poll_until_complete(timeout=60, interval=0.1, on_status=statuses.append)
    assert result.succeeded and result.algorithm == "mipro"
    assert statuses[-1].is_terminal and statuses[0].status in (
        JobState.QUEUED,
        JobState.RUNNING,
        JobState.SUCCEEDED,
    )
    monkeypatch.delenv("POLICYOPT_API_KEY")
    with pytest.raises(ConfigError, match="POLICYOPT_API_KEY"):
        PolicyOptimizationJob.from_job_id("po_x")
    monkeypatch.delenv("POLICYOPT_BACKEND_URL")
    with pytest.raises(ConfigError, match="POLICYOPT_BACKEND_URL"):
        PolicyOptimizationJob.from_job_id("po_x", api_key="k")


def test_submit_checks_the_task_app_first(backend: str, tmp_path: Path) -> None:
    dead = "http://127.0.0.1:9"  # nothing listens there
    with PolicyOptimizationJob.from_dict(config(dead), backend, OWNER_KEY) as job:
        with pytest.raises(JobError, match=r"task app at http://127\.0\.0\.1:9 is not healthy"):
            job.submit()
        assert job.job_id is None
    with httpx.Client(base_url=backend) as http:
        listed = http.get(
            "/api/policy-optimization/online/jobs",
            headers={"Authorization": f"Bearer {OWNER_KEY}"},
        )
        assert listed.json()["jobs"] == []  # nothing was submitted


def test_api_key_env_is_resolved_by_the_client(
    backend: str, task_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_TASK_KEY", TASK_KEY)
    data = config(task_url)
    data["policy_optimization"]["task_app"] = {"url": task_url, "api_key_env": "MY_TASK_KEY"}
    with PolicyOptimizationJob.from_dict(data, backend, OWNER_KEY) as job:
        assert job.config.task_app.api_key == TASK_KEY
        assert job.config.task_app.api_key_env is None
        job.submit()
        assert job.stream_until_complete(timeout=60).succeeded


def test_errors_are_clear(backend: str, task_url: str) -> None:
    with PolicyOptimizationJob.from_job_id("po_nope", backend, "wrong-key") as job:
        with pytest.raises(JobError, match="401.*Check the API key") as info:
            job.get_status()
        assert info.value.status_code == 401
    with (
        PolicyOptimizationJob.from_job_id("po_nope", backend, OWNER_KEY) as job,
        pytest.raises(JobError, match="404.*another API key"),
    ):
        job.get_results()
    with (
        PolicyOptimizationJob.from_job_id("po_x", "http://127.0.0.1:9", OWNER_KEY) as job,
        pytest.raises(JobError, match="Cannot reach the job server"),
    ):
        job.get_status()
    with pytest.raises(ConfigError, match="http"):
        PolicyOptimizationJob.from_job_id("po_x", "ftp://x", OWNER_KEY)
    with pytest.raises(ConfigError, match="algorithm"):
        PolicyOptimizationJob.from_dict(config(task_url, algorithm="sgd"), backend, OWNER_KEY)
    with (
        PolicyOptimizationJob.from_dict(config(task_url), backend, OWNER_KEY) as job,
        pytest.raises(JobError, match="submit"),
    ):
        job.get_status()


def test_cancel_and_timeout(backend: str, task_url: str, evaluate: Counting) -> None:
    evaluate.delay = 0.03
    with PolicyOptimizationJob.from_dict(
        config(task_url, max_rollouts=500), backend, OWNER_KEY
    ) as job:
        job.submit()
        with pytest.raises(JobTimeoutError, match="did not finish"):
            job.poll_until_complete(timeout=0.3, interval=0.1)
        with pytest.raises(JobTimeoutError):
            job.stream_until_complete(timeout=0.3)
        asked = job.cancel("enough")
        assert asked.cancel_requested
        result = job.stream_until_complete(timeout=60)
    assert result.cancelled and result.is_terminal and not result.succeeded
    assert result.progress.rollouts_used < 500


class _Cut(httpx.SyncByteStream):
    """A response body that breaks (like a dropped connection) after ``events`` SSE events."""

    def __init__(self, inner: Any, events: int) -> None:
        self.inner = inner
        self.events = events

    def __iter__(self) -> Iterator[bytes]:
        seen = 0
        for chunk in self.inner:
            yield chunk
            seen += chunk.count(b"\n\n")
            if seen > self.events:
                raise httpx.ReadError("connection dropped (test)")

    def close(self) -> None:
        self.inner.close()


class DropTwice(httpx.BaseTransport):
    """Passes requests through, but the first two event streams break after a few events."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.last_event_ids: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if not request.url.path.endswith("/events/stream"):
            return response
        self.last_event_ids.append(request.headers.get("last-event-id"))
        if len(self.last_event_ids) > 2:
            return response
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_Cut(response.stream, events=3),
            request=request,
        )

    def close(self) -> None:
        self.inner.close()


def test_stream_resumes_after_dropped_connections_without_gaps_or_repeats(
    backend: str, task_url: str, evaluate: Counting
) -> None:
    evaluate.delay = 0.005
    transport = DropTwice()
    seen: list[int] = []
    from policyopt.remote.config import JobConfig

    job = PolicyOptimizationJob(
        JobConfig.from_dict(config(task_url)),
        backend_url=backend,
        api_key=OWNER_KEY,
        transport=transport,
    )
    with job:
        job.submit()
        result = job.stream_until_complete(timeout=60, on_event=lambda e: seen.append(e.seq))
    assert result.succeeded
    assert seen == list(range(1, len(seen) + 1))
    assert len(transport.last_event_ids) >= 3
    assert transport.last_event_ids[0] is None
    resumed_from = [int(v) for v in transport.last_event_ids[1:3] if v is not None]
    assert len(resumed_from) == 2 and resumed_from[0] < resumed_from[1]


def test_parse_sse_and_status_names() -> None:
    text = (
        'retry: 1000\n\n: keep-alive\n\nid: 1\nevent: a\ndata: {"x": 1}\n\n'
        "id: 2\nevent: b\ndata: line one\ndata: line two\n\ndata:tail"
    )
    assert list(parse_sse(text.splitlines())) == [
        {"id": "1", "event": "a", "data": '{"x": 1}'},
        {"id": "2", "event": "b", "data": "line one\nline two"},
        {"data": "tail"},
    ]
    assert normalize_status("completed") is JobState.SUCCEEDED
    assert normalize_status("Canceled") is JobState.CANCELLED
    assert normalize_status("in_progress") is JobState.RUNNING
    with pytest.raises(JobError, match="unknown job status"):
        normalize_status("exploded")


def test_cli_job_commands(
    backend: str, task_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from policyopt.remote.config import JobConfig

    path = tmp_path / "job.toml"
    path.write_text(JobConfig.from_dict(config(task_url)).to_toml())
    env = {"POLICYOPT_BACKEND_URL": backend, "POLICYOPT_API_KEY": OWNER_KEY}
    runner = CliRunner()
    out = runner.invoke(
        cli_app,
        ["job", "submit", str(path), "--stream", "--set", "budget.max_rollouts=60"],
        env=env,
    )
    assert out.exit_code == 0, out.output
    job_id = out.output.splitlines()[0].strip()
    assert job_id.startswith("po_") and "job.succeeded" in out.output
    assert "best prompt:" in out.output

    out = runner.invoke(cli_app, ["job", "status", job_id, "--json"], env=env)
    assert out.exit_code == 0 and json.loads(out.output)["progress"]["max_rollouts"] == 60
    out = runner.invoke(cli_app, ["job", "results", job_id], env=env)
    assert out.exit_code == 0 and "#1 val" in out.output
    out = runner.invoke(cli_app, ["job", "results", job_id, "--json"], env=env)
    assert json.loads(out.output)["top_prompts"][0]["rank"] == 1
    out = runner.invoke(cli_app, ["job", "stream", job_id], env=env)
    assert out.exit_code == 0 and "job.succeeded" in out.output
    out = runner.invoke(cli_app, ["job", "cancel", job_id, "--reason", "late"], env=env)
    assert out.exit_code == 0 and "succeeded" in out.output
    out = runner.invoke(cli_app, ["job", "status", "po_missing"], env=env)
    assert out.exit_code == 2 and "404" in out.output
    out = runner.invoke(cli_app, ["job", "status", job_id], env={"POLICYOPT_BACKEND_URL": backend})
    assert out.exit_code == 2 and "API key" in out.output
