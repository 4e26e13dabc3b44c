"""TaskAppClient against live servers on 127.0.0.1: results, retries, give-up, concurrency."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse

from policyopt import Score
from policyopt.errors import ConfigError, EvaluationError
from policyopt.remote._serving import bind, serve_in_thread
from policyopt.remote.taskapp.client import TaskAppClient, TaskAppError
from policyopt.rollout import RolloutEngine
from tests.unit.remote.conftest import API_KEY, Scripted

FAST = {"backoff": 0.01, "max_backoff": 0.05}


@pytest.fixture
def client(app_url: str) -> Iterator[TaskAppClient]:
    with TaskAppClient(app_url, API_KEY, retries=1, **FAST) as c:
        yield c


def test_health_task_info_and_rollout(client: TaskAppClient) -> None:
    assert client.health()["healthy"] is True
    info = client.task_info()
    assert info.ids("train") == ["hot", "big", "7"]
    assert info.ids() == ["hot", "big", "7", "wet", "boom", "huge", "up"]
    score = client.rollout("hot", "Give the opposite.", {"model": "m"})
    assert score == Score(
        1.0, output={"said": "cold", "n": 1}, objectives={"accuracy": 1.0, "brevity": 0.5}
    )


def test_program_evaluates_by_example_id(client: TaskAppClient, scripted: Scripted) -> None:
    program = client.program("Answer.", {"model": "m", "temperature": 0})
    assert program.prompt == "Answer."
    score = program.evaluate("Say it.", {"id": "big"})
    assert score.score == 0.0 and score.feedback == "expected small"
    assert program.evaluate("opposite", {"id": 7}).score == 1.0  # int ids are sent as str
    assert scripted.calls[0] == ("Say it.", "big", {"model": "m", "temperature": 0})
    with pytest.raises(ConfigError, match="'id'"):
        program.evaluate("x", {"word": "hot"})


def test_a_failed_evaluation_is_a_failed_rollout_not_retried(
    client: TaskAppClient, scripted: Scripted
) -> None:
    with pytest.raises(TaskAppError, match="the model server is down") as info:
        client.rollout("boom", "x")
    assert info.value.rollout_failed and info.value.status == 500
    assert isinstance(info.value, EvaluationError)
    assert [c[1] for c in scripted.calls] == ["boom"]  # exactly one try


def test_4xx_is_not_retried(client: TaskAppClient, scripted: Scripted) -> None:
    with pytest.raises(TaskAppError, match="answered 404: unknown example id") as info:
        client.rollout("missing", "x")
    assert info.value.status == 404 and not info.value.rollout_failed
    with TaskAppClient(client.url, "wrong", retries=3, backoff=2.0) as bad:
        started = time.perf_counter()
        with pytest.raises(TaskAppError, match="401.*API key"):
            bad.health()
        assert time.perf_counter() - started < 1.0  # a retry would have waited >= 1 s


def test_the_rollout_engine_records_remote_failures_and_goes_on(
    client: TaskAppClient,
) -> None:
    program = client.program("Answer.")
    with RolloutEngine(program.evaluate, n_jobs=4, max_errors=5) as engine:
        ids = engine.add_split("val", [{"id": i} for i in ("wet", "boom", "huge", "hot")])
        result = engine.run([("opposite", i) for i in ids], split="val")
        assert result.scores() == [1.0, 0.0, 0.0, 1.0]  # failures score failure_score
        failed = dict(engine.failures)
    assert set(failed) == {"val/boom", "val/huge"}
    assert "the model server is down" in failed["val/boom"]
    assert "[0, 1]" in failed["val/huge"]


class Flaky:
    """A task app that fails the first ``failures`` requests with ``status`` then works."""

    def __init__(self, failures: int, status: int = 503, *, body: Any = None, **headers: str):
        self.failures = failures
        self.status = status
        self.body = body
        self.headers = headers
        self.attempts = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.delay = 0.0
        self.release = threading.Event()
        self.app = FastAPI()
        self.app.post("/rollout")(self.rollout)

    def rollout(self, request: dict[str, Any]) -> Any:
        with self.lock:
            self.attempts += 1
            attempt = self.attempts
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self.release.wait(self.delay)
            if attempt <= self.failures:
                if self.body is None:
                    return PlainTextResponse("busy", self.status, headers=self.headers)
                return JSONResponse(self.body, self.status, headers=self.headers)
            return {"example_id": request["example_id"], "score": 0.75, "feedback": "fine"}
        finally:
            with self.lock:
                self.in_flight -= 1


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_retries_transient_errors_then_succeeds(status: int) -> None:
    flaky = Flaky(failures=2, status=status)
    with serve_in_thread(flaky.app) as url, TaskAppClient(url, retries=2, **FAST) as c:
        assert c.rollout("a", "p") == Score(0.75, feedback="fine")
    assert flaky.attempts == 3


def test_gives_up_after_the_last_retry_with_the_cause() -> None:
    flaky = Flaky(failures=10, status=503)
    with (
        serve_in_thread(flaky.app) as url,
        TaskAppClient(url, retries=2, **FAST) as c,
        pytest.raises(
            TaskAppError,
            match=r"after 3 attempt\(s\): HTTP 503: a body that is not JSON \(4 bytes, not shown\)",
        ) as info,
    ):
        c.rollout("a", "p")
    assert flaky.attempts == 3
    assert info.value.url == f"{url}/rollout"


def test_retry_after_is_honoured() -> None:
    flaky = Flaky(failures=1, status=429, **{"Retry-After": "0.4"})
    with serve_in_thread(flaky.app) as url, TaskAppClient(url, retries=1, **FAST) as c:
        started = time.perf_counter()
        assert c.rollout("a", "p").score == 0.75
        assert time.perf_counter() - started >= 0.4


def test_a_400_from_the_app_is_not_retried() -> None:
    flaky = Flaky(failures=5, status=400, body={"detail": "bad policy"})
    with (
        serve_in_thread(flaky.app) as url,
        TaskAppClient(url, retries=3, **FAST) as c,
        pytest.raises(TaskAppError, match="answered 400: bad policy"),
    ):
        c.rollout("a", "p")
    assert flaky.attempts == 1


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"example_id": "a", "score": 1.5}, "less than or equal to 1"),
        ({"example_id": "a"}, "score: Field required"),
        ({"example_id": "b", "score": 0.5}, "answered for example 'b'"),
    ],
)
def test_invalid_answers_are_errors(answer: dict[str, Any], message: str) -> None:
    app = FastAPI()
    app.post("/rollout")(lambda: JSONResponse(answer))
    with (
        serve_in_thread(app) as url,
        TaskAppClient(url, retries=0) as c,
        pytest.raises(TaskAppError, match=message),
    ):
        c.rollout("a", "p")


def test_a_closed_port_fails_in_bounded_time() -> None:
    sock = bind()  # reserve a port, then close it: nothing listens there
    port = sock.getsockname()[1]
    sock.close()
    url = f"http://127.0.0.1:{port}"
    with TaskAppClient(url, retries=3, backoff=0.05, max_backoff=0.2) as c:
        started = time.perf_counter()
        with pytest.raises(TaskAppError, match=r"after 4 attempt\(s\): ConnectError") as info:
            c.health()
        elapsed = time.perf_counter() - started
    assert elapsed < 2.0
    assert url in str(info.value) and info.value.status is None


def test_a_hanging_app_times_out_in_bounded_time() -> None:
    flaky = Flaky(failures=0)
    flaky.delay = 60.0  # hangs until released
    with serve_in_thread(flaky.app) as url, TaskAppClient(url, timeout=0.2, retries=1, **FAST) as c:
        started = time.perf_counter()
        with pytest.raises(TaskAppError, match="ReadTimeout"):
            c.rollout("a", "p")
        assert time.perf_counter() - started < 5.0
        flaky.release.set()
        # the server may reach the retry after the client gave up on it (a loaded machine)
        deadline = time.monotonic() + 10.0
        while flaky.attempts < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert flaky.attempts == 2


def test_concurrency_is_bounded_and_thread_safe() -> None:
    flaky = Flaky(failures=0)
    flaky.delay = 0.05
    with (
        serve_in_thread(flaky.app) as url,
        TaskAppClient(url, max_concurrency=3) as c,
        ThreadPoolExecutor(12) as pool,
    ):
        scores = list(pool.map(lambda i: c.rollout(str(i), "p").score, range(24)))
    assert scores == [0.75] * 24
    assert flaky.attempts == 24
    assert flaky.max_in_flight <= 3
    assert flaky.max_in_flight >= 2  # the bound is a bound, not serialization


def test_a_closed_client_refuses_calls(app_url: str) -> None:
    c = TaskAppClient(app_url, API_KEY)
    c.close()
    with pytest.raises(TaskAppError, match="closed"):
        c.health()


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
def test_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    args = {"url": "http://127.0.0.1:1", **kwargs}
    with pytest.raises(ConfigError, match=message):
        TaskAppClient(**args)


def test_named_prompt_components_travel_as_an_object(
    client: TaskAppClient, scripted: Scripted
) -> None:
    assert client.rollout("hot", {"system": "Give the opposite.", "user": "x"}).score == 1.0
    assert scripted.calls[-1][0] == {"system": "Give the opposite.", "user": "x"}
