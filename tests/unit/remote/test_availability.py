"""No request can stall a server (issue 26): slow clients are closed, checks are O(the body),
huge id ranges are refused before they are expanded, and /health answers meanwhile.

Real uvicorn servers on 127.0.0.1; the slow clients are raw sockets, bounded in number and
time, with the servers' read deadlines lowered so the tests take seconds.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from policyopt.remote._serving import GuardedH11Protocol, ServerThread, uvicorn_config
from tests.integration.remote.support import job_config
from tests.unit.remote.test_server import JOBS, Server, make_server  # noqa: F401 (fixture)

pytestmark = pytest.mark.waits  # see tests/conftest.py

SLOW_CLIENTS = 20


@pytest.fixture
def short_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(GuardedH11Protocol, "header_timeout_s", 1.0)
    monkeypatch.setattr(GuardedH11Protocol, "body_timeout_s", 2.0)


def small_app() -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/echo")
    async def echo(body: dict[str, Any]) -> dict[str, Any]:
        return body

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def ticks() -> Any:
            for n in range(6):  # 3 s of answer: longer than both read deadlines
                yield f"tick {n}\n"
                await asyncio.sleep(0.5)

        return StreamingResponse(ticks(), media_type="text/plain")

    return app


@pytest.fixture
def served(short_deadlines: None) -> Iterator[ServerThread]:
    server = ServerThread(small_app()).start()
    try:
        yield server
    finally:
        server.stop()


def closed_after(sock: socket.socket, drip: bytes, every: float, limit: float) -> float | None:
    """Send ``drip`` every ``every`` s until the server closes the socket; seconds it took,
    None if it was still open after ``limit`` s."""
    started = time.monotonic()
    sock.settimeout(every)
    while time.monotonic() - started < limit:
        try:
            if sock.recv(4096) == b"":
                return time.monotonic() - started
        except TimeoutError:
            pass
        except OSError:  # reset: closed as well
            return time.monotonic() - started
        try:
            sock.sendall(drip)
        except OSError:
            return time.monotonic() - started
    return None


def attack(url: str, opening: bytes, drip: bytes, limit: float = 12.0) -> list[float | None]:
    """SLOW_CLIENTS connections sending ``opening`` then ``drip`` every 0.3 s, in parallel."""
    host, port = url.removeprefix("http://").split(":")
    results: list[float | None] = [None] * SLOW_CLIENTS

    def one(index: int) -> None:
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(opening)
            results[index] = closed_after(sock, drip, 0.3, limit)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(SLOW_CLIENTS)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200  # served meanwhile
    for thread in threads:
        thread.join(limit + 10)
    return results


def test_clients_that_drip_their_headers_are_closed_at_the_header_deadline(
    served: ServerThread,
) -> None:
    """A header line every 0.3 s used to keep a connection forever (no header timeout)."""
    results = attack(served.url, b"GET /health HTTP/1.1\r\nHost: x\r\n", b"X-Slow: 1\r\n")
    assert all(r is not None and 0.8 <= r < 8 for r in results), results


def test_a_connection_that_sends_nothing_is_closed_too(served: ServerThread) -> None:
    results = attack(served.url, b"", b"")
    assert all(r is not None and r < 8 for r in results), results


def test_a_body_dripped_byte_by_byte_is_closed_at_the_body_deadline(served: ServerThread) -> None:
    opening = (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    results = attack(served.url, opening, b" ")
    assert all(r is not None and 1.8 <= r < 10 for r in results), results


def test_long_answers_and_keep_alive_requests_are_not_cut(served: ServerThread) -> None:
    with httpx.Client(base_url=served.url, timeout=10) as http:
        lines = http.get("/stream").text.splitlines()
        assert lines == [f"tick {n}" for n in range(6)]  # 3 s, past both deadlines
        for _ in range(3):  # one connection, requests 1.2 s apart: each gets a new deadline
            assert http.post("/echo", json={"a": 1}).json() == {"a": 1}
            time.sleep(0.4)


def test_the_served_config_has_a_connection_cap_and_keep_alive_timeout() -> None:
    config = uvicorn_config(small_app())
    assert config.http is GuardedH11Protocol
    assert config.limit_concurrency == 1000 and config.timeout_keep_alive == 5


# ------------------------------------------------------------------ the job server's checks
def huge_ids() -> dict[str, Any]:
    config = job_config()
    config["policy_optimization"]["ids"] = {
        split: {"start": n * 10**6, "end": (n + 1) * 10**6} for n, split in enumerate(SPLITS)
    }
    return config


SPLITS = ("train", "val", "test")


def test_huge_id_ranges_are_refused_before_they_are_expanded_and_health_answers(
    make_server: Callable[..., Server],  # noqa: F811
) -> None:
    """3 x 1M ids in a 200-byte body: expanded on the event loop before the 100,000-id check,
    each stalled /health ~0.9 s and took up to 99 s to refuse."""
    server = make_server()
    with server.client() as http:
        started = time.monotonic()
        response = http.post(JOBS, json=huge_ids())
        took = time.monotonic() - started
        assert response.status_code == 422, response.text
        assert "1000000 ids" in response.json()["detail"] and "100,000" in response.json()["detail"]
        assert took < 2.0, took
        stop = threading.Event()
        worst = [0.0]

        def probe() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as health:
                while not stop.is_set():
                    t = time.monotonic()
                    health.get("/health")
                    worst[0] = max(worst[0], time.monotonic() - t)

        watcher = threading.Thread(target=probe)
        watcher.start()
        try:
            for _ in range(4):
                assert http.post(JOBS, json=huge_ids()).status_code == 422
        finally:
            stop.set()
            watcher.join()
        assert worst[0] < 0.5, worst


def test_a_billion_mipro_trials_does_not_stall_the_server(
    make_server: Callable[..., Server],  # noqa: F811
) -> None:
    """It never returned, and every other request (health included) hung with it."""
    server = make_server()
    config = job_config("mipro", section={"num_trials": 10**9, "num_candidates": 3})
    with server.client() as http:
        started = time.monotonic()
        response = http.post(JOBS, json=config)
        assert response.status_code in (201, 422), response.text
        assert time.monotonic() - started < 2.0
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
