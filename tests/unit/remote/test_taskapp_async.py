"""The async task-app client against live servers on 127.0.0.1, case for case with the sync one.

Every behaviour case (retries, 429 and Retry-After, 4xx, rollout_failed, timeouts, the outbound
policy, oversized bodies, redirects, bodies never echoed) runs on both paths: the sync
``TaskAppClient`` and ``AsyncTaskAppClient`` awaited on policyopt's event loop, as the engine
runs it. Last, a job on a real job server with ``n_jobs=100`` against a task app whose evaluate
awaits 50 ms: exact budget, and more than 50 rollouts in flight on the task app's side.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse as StarletteJSON
from starlette.routing import Route

from policyopt import Score
from policyopt.errors import ConfigError, EvaluationError
from policyopt.remote._serving import ServerThread, bind, serve_forever, serve_in_thread
from policyopt.remote.config import JobConfig
from policyopt.remote.server.app import create_app
from policyopt.remote.server.execution import task_app_client
from policyopt.remote.taskapp.client import AsyncTaskAppClient, TaskAppClient, TaskAppError
from policyopt.remote.taskapp.outbound import OutboundPolicy
from policyopt.rollout import RolloutEngine
from policyopt.rollout.aio import await_blocking, call_blocking, is_async_callable
from tests.integration.remote.support import (
    OWNER_KEY,
    FreshProposals,
    job_config,
    needs,
    wait_for,
)
from tests.unit.remote.capture import capture_server
from tests.unit.remote.conftest import API_KEY, Scripted
from tests.unit.remote.test_taskapp_client import Flaky

pytestmark = pytest.mark.waits  # see tests/conftest.py

FAST = {"backoff": 0.01, "max_backoff": 0.05}
Client = TaskAppClient | AsyncTaskAppClient
JOBS = "/api/policy-optimization/online/jobs"


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> type[Client]:
    """Each case runs on the sync client and on the async one."""
    return TaskAppClient if request.param == "sync" else AsyncTaskAppClient


@contextmanager
def opened(kind: type[Client], url: str, api_key: str | None = None, **kw: Any) -> Iterator[Any]:
    """A client of ``kind`` closed at the end (``close()`` is sync on both)."""
    client = kind(url, api_key, **kw)
    try:
        yield client
    finally:
        client.close()


def call(method: Callable[..., Any], *args: Any) -> Any:
    """Call a client method from the test: a coroutine is awaited on policyopt's loop."""
    return call_blocking(method, *args)


def test_health_task_info_and_rollout(kind: type[Client], app_url: str) -> None:
    with opened(kind, app_url, API_KEY, retries=1, **FAST) as c:
        assert call(c.health)["healthy"] is True
        assert call(c.task_info).ids("train") == ["hot", "big", "7"]
        assert call(c.rollout, "hot", "Give the opposite.", {"model": "m"}) == Score(
            1.0, output={"said": "cold", "n": 1}, objectives={"accuracy": 1.0, "brevity": 0.5}
        )


def test_program_evaluates_by_example_id(
    kind: type[Client], app_url: str, scripted: Scripted
) -> None:
    with opened(kind, app_url, API_KEY, retries=1, **FAST) as c:
        program = c.program("Answer.", {"model": "m", "temperature": 0})
        assert is_async_callable(program.evaluate) == (kind is AsyncTaskAppClient)
        score = call(program.evaluate, "Say it.", {"id": "big"})
        assert score.score == 0.0 and score.feedback == "expected small"
        assert call(program.evaluate, "opposite", {"id": 7}).score == 1.0
        assert scripted.calls[0] == ("Say it.", "big", {"model": "m", "temperature": 0})
        with pytest.raises(ConfigError, match="'id'"):
            call(program.evaluate, "x", {"word": "hot"})


def test_a_failed_evaluation_is_a_failed_rollout_not_retried(
    kind: type[Client], app_url: str, scripted: Scripted
) -> None:
    with (
        opened(kind, app_url, API_KEY, retries=3, **FAST) as c,
        pytest.raises(TaskAppError, match="the model server is down") as info,
    ):
        call(c.rollout, "boom", "x")
    assert info.value.rollout_failed and info.value.status == 500
    assert isinstance(info.value, EvaluationError)
    assert [c[1] for c in scripted.calls] == ["boom"]  # exactly one try


def test_4xx_is_not_retried(kind: type[Client], app_url: str) -> None:
    with opened(kind, app_url, API_KEY, retries=3, **FAST) as c:
        with pytest.raises(TaskAppError, match="answered 404: unknown example id") as info:
            call(c.rollout, "missing", "x")
        assert info.value.status == 404 and not info.value.rollout_failed
    with opened(kind, app_url, "wrong", retries=3, backoff=2.0) as bad:
        started = time.perf_counter()
        with pytest.raises(TaskAppError, match="401.*API key"):
            call(bad.health)
        assert time.perf_counter() - started < 1.0  # a retry would have waited >= 1 s


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_retries_transient_errors_then_succeeds(kind: type[Client], status: int) -> None:
    flaky = Flaky(failures=2, status=status)
    with serve_in_thread(flaky.app) as url, opened(kind, url, retries=2, **FAST) as c:
        assert call(c.rollout, "a", "p") == Score(0.75, feedback="fine")
    assert flaky.attempts == 3


def test_gives_up_after_the_last_retry_with_the_cause(kind: type[Client]) -> None:
    flaky = Flaky(failures=10, status=503)
    with (
        serve_in_thread(flaky.app) as url,
        opened(kind, url, retries=2, **FAST) as c,
        pytest.raises(
            TaskAppError,
            match=r"after 3 attempt\(s\): HTTP 503: a body that is not JSON \(4 bytes, not shown\)",
        ) as info,
    ):
        call(c.rollout, "a", "p")
    assert flaky.attempts == 3
    assert info.value.url == f"{url}/rollout"


def test_retry_after_is_honoured(kind: type[Client]) -> None:
    flaky = Flaky(failures=1, status=429, **{"Retry-After": "0.4"})
    with serve_in_thread(flaky.app) as url, opened(kind, url, retries=1, **FAST) as c:
        started = time.perf_counter()
        assert call(c.rollout, "a", "p").score == 0.75
        assert time.perf_counter() - started >= 0.4
    assert flaky.attempts == 2


def test_a_400_from_the_app_is_not_retried(kind: type[Client]) -> None:
    flaky = Flaky(failures=5, status=400, body={"detail": "bad policy"})
    with (
        serve_in_thread(flaky.app) as url,
        opened(kind, url, retries=3, **FAST) as c,
        pytest.raises(TaskAppError, match="answered 400: bad policy"),
    ):
        call(c.rollout, "a", "p")
    assert flaky.attempts == 1


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"example_id": "a", "score": 1.5}, "less than or equal to 1"),
        ({"example_id": "b", "score": 0.5}, "answered for example 'b'"),
    ],
)
def test_invalid_answers_are_errors(
    kind: type[Client], answer: dict[str, Any], message: str
) -> None:
    app = FastAPI()
    app.post("/rollout")(lambda: JSONResponse(answer))
    with (
        serve_in_thread(app) as url,
        opened(kind, url, retries=0) as c,
        pytest.raises(TaskAppError, match=message),
    ):
        call(c.rollout, "a", "p")


def test_a_closed_port_fails_in_bounded_time(kind: type[Client]) -> None:
    sock = bind()  # reserve a port, then close it: nothing listens there
    port = sock.getsockname()[1]
    sock.close()
    url = f"http://127.0.0.1:{port}"
    with opened(kind, url, retries=3, backoff=0.05, max_backoff=0.2) as c:
        started = time.perf_counter()
        with pytest.raises(TaskAppError, match=r"after 4 attempt\(s\): ConnectError") as info:
            call(c.health)
        elapsed = time.perf_counter() - started
    assert elapsed < 2.0
    assert url in str(info.value) and info.value.status is None


def test_a_hanging_app_times_out_in_bounded_time(kind: type[Client]) -> None:
    flaky = Flaky(failures=0)
    flaky.delay = 60.0  # hangs until released
    with serve_in_thread(flaky.app) as url, opened(kind, url, timeout=0.2, retries=1, **FAST) as c:
        started = time.perf_counter()
        with pytest.raises(TaskAppError, match="ReadTimeout"):
            call(c.rollout, "a", "p")
        assert time.perf_counter() - started < 5.0
        flaky.release.set()
        # the server may reach the retry after the client gave up on it (a loaded machine)
        deadline = time.monotonic() + 10.0
        while flaky.attempts < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert flaky.attempts == 2


def test_concurrency_is_bounded(kind: type[Client]) -> None:
    flaky = Flaky(failures=0)
    flaky.delay = 0.05
    with serve_in_thread(flaky.app) as url, opened(kind, url, max_concurrency=3) as c:
        if isinstance(c, AsyncTaskAppClient):

            async def many() -> list[float]:
                scores = await asyncio.gather(*(c.rollout(str(i), "p") for i in range(24)))
                return [s.score for s in scores]

            scores = await_blocking(many())
        else:
            with ThreadPoolExecutor(12) as pool:
                scores = list(pool.map(lambda i: c.rollout(str(i), "p").score, range(24)))
    assert scores == [0.75] * 24
    assert flaky.attempts == 24
    assert 2 <= flaky.max_in_flight <= 3  # a bound, not serialization


def test_a_closed_client_refuses_calls(kind: type[Client], app_url: str) -> None:
    c = kind(app_url, API_KEY)
    c.close()
    with pytest.raises(TaskAppError, match="closed"):
        call(c.health)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "127.0.0.1:8001"}, "http://"),
        ({"timeout": 0}, "timeout"),
        ({"retries": -1}, "retries"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"backoff": "fast"}, "backoff"),
    ],
)
def test_bad_arguments(kind: type[Client], kwargs: dict[str, Any], message: str) -> None:
    args = {"url": "http://127.0.0.1:1", **kwargs}
    with pytest.raises(ConfigError, match=message):
        kind(**args)


# ------------------------------------------------------------------ outbound guarantees
def test_the_outbound_policy_refuses_at_once_and_allows_what_it_lists(
    kind: type[Client],
) -> None:
    with capture_server() as capture:
        port = capture.url.rsplit(":", 1)[1]
        refused = OutboundPolicy(["10.0.0.0/8"])
        with (
            opened(kind, f"http://127.0.0.1:{port}", outbound=refused, retries=3) as c,
            pytest.raises(TaskAppError, match="outbound policy"),
        ):
            started = time.monotonic()
            call(c.health)
        assert time.monotonic() - started < 2  # refused at once, not retried
        assert capture.seen() == []
        with opened(kind, capture.url, outbound=OutboundPolicy()) as c:
            assert call(c.health) == {"status": "ok"}
            assert call(c.health) == {"status": "ok"}
        assert len(capture.seen()) == 2


def test_every_new_connection_is_checked_dns_rebinding_refused(
    kind: type[Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name that resolved to loopback once resolves to a metadata address on the next
    connection: refused before connecting, never reaching the capture server."""
    real = socket.getaddrinfo
    answers = iter(["127.0.0.1"])

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "tasks.rebind.test":
            return real(host, port, *args, **kwargs)
        address = next(answers, "169.254.169.254")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with capture_server() as capture:
        port = capture.url.rsplit(":", 1)[1]
        url = f"http://tasks.rebind.test:{port}"
        with opened(kind, url, outbound=OutboundPolicy(["tasks.rebind.test"]), retries=2) as c:
            assert call(c.health) == {"status": "ok"}  # first connection: loopback, allowed
        with (
            opened(kind, url, outbound=OutboundPolicy(["tasks.rebind.test"]), retries=2) as c,
            pytest.raises(TaskAppError, match=r"outbound policy.*169\.254\.169\.254"),
        ):
            call(c.health)
        assert len(capture.seen()) == 1


def test_an_oversized_answer_is_an_error_not_retried(kind: type[Client]) -> None:
    with (
        capture_server(body=b'{"pad": "' + b"x" * 5000 + b'"}') as capture,
        opened(kind, capture.url, retries=3, max_response_bytes=1000, **FAST) as c,
        pytest.raises(TaskAppError, match="more than 1000 bytes") as info,
    ):
        call(c.health)
    assert info.value.status == 200
    assert len(capture.seen()) == 1


def test_redirects_are_not_followed(kind: type[Client]) -> None:
    with (
        capture_server(status=302, body=b"") as redirector,
        opened(kind, redirector.url, retries=3, **FAST) as c,
        pytest.raises(TaskAppError, match=r"redirect \(302\)") as info,
    ):
        call(c.health)
    assert info.value.status == 302
    assert [r["path"] for r in redirector.seen()] == ["/health"]  # once: no retry, no follow


def test_an_error_body_is_never_echoed(kind: type[Client]) -> None:
    secret = b"<html>root password: hunter2 " + b"x" * 500 + b"</html>"
    with (
        capture_server(status=404, body=secret, content_type="text/html") as capture,
        opened(kind, capture.url, **FAST) as c,
        pytest.raises(TaskAppError) as info,
    ):
        call(c.health)
    assert "404" in str(info.value) and "not shown" in str(info.value)
    assert "hunter2" not in str(info.value)


# ------------------------------------------------------------------ through the engine
def test_the_engine_records_remote_failures_and_goes_on(kind: type[Client], app_url: str) -> None:
    with opened(kind, app_url, API_KEY, retries=1, **FAST) as c:
        program = c.program("Answer.")
        with RolloutEngine(program.evaluate, n_jobs=4, max_errors=5) as engine:
            ids = engine.add_split("val", [{"id": i} for i in ("wet", "boom", "huge", "hot")])
            result = engine.run([("opposite", i) for i in ids], split="val")
            assert result.scores() == [1.0, 0.0, 0.0, 1.0]
            failed = dict(engine.failures)
    assert set(failed) == {"val/boom", "val/huge"}
    assert "the model server is down" in failed["val/boom"]


def test_the_job_server_builds_an_async_client_sized_to_n_jobs() -> None:
    config = JobConfig.from_dict(
        job_config(url="http://127.0.0.1:9", section={"n_jobs": 64, "timeout": 12})
    )
    client = task_app_client(config, OutboundPolicy())
    try:
        assert isinstance(client, AsyncTaskAppClient)
        assert client.max_concurrency == 64 and client.timeout == 12.0
        assert is_async_callable(client.program("p").evaluate)
    finally:
        client.close()


class InFlight:
    """An async task app (plain Starlette): each rollout awaits ``delay`` seconds; counts the
    rollouts served and the most in flight at once (all on uvicorn's one loop: no lock), shown
    at ``GET /stats``."""

    def __init__(self, delay: float, table: dict[str, str]) -> None:
        self.delay = delay
        self.table = table
        self.in_flight = 0
        self.peak = 0
        self.served = 0
        self.app = Starlette(
            routes=[
                Route("/health", self.health, methods=["GET"]),
                Route("/rollout", self.rollout, methods=["POST"]),
                Route("/stats", self.stats, methods=["GET"]),
            ]
        )

    async def stats(self, request: Request) -> StarletteJSON:
        return StarletteJSON({"peak": self.peak, "served": self.served})

    async def health(self, request: Request) -> StarletteJSON:
        return StarletteJSON({"healthy": True})

    async def rollout(self, request: Request) -> StarletteJSON:
        body = await request.json()
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        self.served += 1
        ok = self.table[body["example_id"]] in str(body["prompt"])
        return StarletteJSON({"example_id": body["example_id"], "score": float(ok)})


def serve_in_flight(port: int, n_train: int, n_val: int) -> None:
    """Serve :class:`InFlight` (50 ms per rollout) on ``port``: run in its own process."""
    serve_forever(InFlight(0.5, needs(n_train, n_val, 0)).app, port=port, log_level="warning")


@contextmanager
def in_flight_app(n_train: int, n_val: int) -> Iterator[str]:
    """:class:`InFlight` in a child process (its own interpreter lock, as a real task app has,
    so the count is not limited by the job server's CPU work); yields its URL."""
    sock = bind()
    port = sock.getsockname()[1]
    sock.close()
    code = (
        "from tests.unit.remote.test_taskapp_async import serve_in_flight; "
        f"serve_in_flight({port}, {n_train}, {n_val})"
    )
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            assert proc.poll() is None, f"the task app process exited with {proc.returncode}"
            try:
                return httpx.get(url + "/stats", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=120)  # importing FastAPI and policyopt takes long on a busy machine
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.slow
def test_a_job_runs_its_rollouts_as_coroutines_many_in_flight(tmp_path: Path) -> None:
    """GEPA on a real job server, n_jobs=100, against a task app whose rollouts await 0.5 s:
    the budget is spent exactly, each rollout served once, more than 50 at once (with 50 ms, a
    busy 2-core machine could not start requests fast enough to overlap that many)."""
    n_train, n_val, budget = 40, 120, 300
    server = create_app(
        tmp_path / "jobs.db",
        tmp_path / "runs",
        [OWNER_KEY],
        reflection_lm_factory=FreshProposals(),  # never solves the task: the budget is spent
    )
    with (
        in_flight_app(n_train, n_val) as task_url,
        ServerThread(server) as backend,
        httpx.Client(
            base_url=backend.url, headers={"Authorization": f"Bearer {OWNER_KEY}"}, timeout=30
        ) as http,
    ):
        config = job_config(
            url=task_url,
            task_key=None,
            max_rollouts=budget,
            n_train=n_train,
            n_val=n_val,
            n_test=0,
            section={"n_jobs": 100, "minibatch_size": 10},
        )
        response = http.post(JOBS, json=config)
        assert response.status_code == 201, response.text
        job_id = response.json()["job_id"]

        def finished() -> dict[str, Any] | None:
            body = http.get(f"{JOBS}/{job_id}").json()
            return body if body["status"] in ("succeeded", "failed", "cancelled") else None

        status = wait_for(finished, timeout=120)
        task = http.get(f"{task_url}/stats").json()
    assert status["status"] == "succeeded", status
    assert status["progress"]["rollouts_used"] == budget
    assert task["served"] == budget  # each paid rollout served exactly once, none retried
    assert task["peak"] > 50, task
