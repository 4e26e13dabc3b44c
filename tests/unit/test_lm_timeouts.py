"""LM timeouts against a slow server on loopback must not multiply the server's load.

The scenario of the issue, time-scaled by 1/100: a model server that takes 150 s per answer
(here 1.5 s) and serves ``C`` requests at a time, an LM whose timeout is 100 s (here 1.0 s),
called from more threads than ``C``. The server keeps working on a request after its client
gave up (as llama.cpp and vLLM do without streaming), and counts how many requests it holds at
once, queued or running. Before the fix the LM re-sent a timed-out request at once, so the server
held the abandoned request *and* its retry (and, with retries of retries, several copies).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from policyopt import LM
from policyopt.errors import ConfigError, LMError
from policyopt.lm import LocalLM

pytestmark = pytest.mark.waits  # see tests/conftest.py

SCALE = 1 / 100  #: 150 s answers and a 100 s timeout become 1.5 s and 1.0 s
SERVICE_S = 150 * SCALE
TIMEOUT_S = 100 * SCALE


class SlowServer:
    """An OpenAI-compatible server with ``concurrency`` slots that answers in ``service_s``.

    Extra requests queue for a slot. A request is worked on to the end even when its client has
    disconnected. ``max_held`` is the most requests held at once (queued + running).
    """

    def __init__(self, concurrency: int, service_s: float) -> None:
        self.service_s = service_s
        self.slots = threading.Semaphore(concurrency)
        self.lock = threading.Lock()
        self.held = 0
        self.max_held = 0
        self.received: list[float] = []
        self.httpd: ThreadingHTTPServer | None = None

    @property
    def api_base(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def answer(self, body: dict[str, Any]) -> bytes:
        with self.lock:
            self.held += 1
            self.max_held = max(self.max_held, self.held)
            self.received.append(time.monotonic())
        try:
            with self.slots:
                time.sleep(self.service_s)
        finally:
            with self.lock:  # done before the answer is written: a next request may follow it
                self.held -= 1
        question = body["messages"][-1]["content"]
        return json.dumps(
            {
                "id": "chatcmpl-slow",
                "object": "chat.completion",
                "created": 0,
                "model": body.get("model", "slow"),
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": f"answer to {question}"},
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }
        ).encode()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                payload = server.answer(body)
                try:
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client gave up (the "broken pipe" of the issue)
                    self.close_connection = True

        return Handler


@contextmanager
def slow_server(concurrency: int, service_s: float = SERVICE_S) -> Iterator[SlowServer]:
    server = SlowServer(concurrency, service_s)
    server.httpd = ThreadingHTTPServer(("127.0.0.1", 0), server.handler())
    server.httpd.daemon_threads = True
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def make_lm(api_base: str, **kwargs: Any) -> LM:
    return LM("openai/x", api_base=api_base, api_key="x", **kwargs)


@pytest.fixture(scope="module", autouse=True)
def warm_litellm() -> None:
    """litellm's first request spends ~1-4 s importing and setting up: not the server's time."""
    with slow_server(1, service_s=0.0) as server:
        assert make_lm(server.api_base)("warm up") == "answer to warm up"


class NoGhostLM(LM):
    """The old behaviour: a timed-out request's slot is free at once."""

    def _ghost_delay(self, waited: float) -> float:
        return 0.0


@pytest.mark.slow
def test_a_run_against_a_slow_server_never_exceeds_its_concurrency() -> None:
    """6 calls from 6 threads, 2 server slots: the first two time out, the rest wait longer.

    Expected ~7 s: the two timed-out requests keep their slots 1 s more (until 2 s; the server
    finished them at 1.5 s), then 3 rounds of 1.5 s with the doubled 2 s timeout.
    """
    concurrency, calls = 2, 6
    with slow_server(concurrency) as server:
        lm = make_lm(server.api_base, timeout=TIMEOUT_S, max_concurrency=concurrency)
        start = time.monotonic()
        with ThreadPoolExecutor(calls) as pool:
            answers = list(pool.map(lm, [f"q{i}" for i in range(calls)]))
        wall = time.monotonic() - start
        assert answers == [f"answer to q{i}" for i in range(calls)]
        assert server.max_held <= concurrency
        # each call costs the server one answer, plus one abandoned per first timeout (2 here;
        # slack for a loaded machine); the storm sent 30 requests for these 6 calls
        assert len(server.received) <= calls + 2 * concurrency, len(server.received)
        assert lm.usage.calls == calls and lm.usage.errors == 0
        # 1 s + 1 s ghost + 3 x 1.5 s is ~6.5 s; the retry storm took > 12 s (or failed)
        assert wall < 12.0, wall


def test_without_ghost_slots_a_retry_stacks_on_the_abandoned_request() -> None:
    """The check above fails for the old behaviour (slot released when the client gives up)."""
    with slow_server(1) as server:
        lm = NoGhostLM(
            "openai/x",
            api_base=server.api_base,
            api_key="x",
            timeout=TIMEOUT_S,
            max_concurrency=1,
            num_retries=0,  # the first request is enough to show it; no need to wait for more
        )
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(lm, f"q{i}") for i in range(2)]
            for future in futures:
                future.exception()  # some time out: only the server's count matters here
        # the first request times out at 1.0 s and the second goes out while the server is still
        # on the first (until 1.5 s)
        assert server.max_held >= 2


def test_timeouts_back_off_grow_and_are_capped(caplog: pytest.LogCaptureFixture) -> None:
    with slow_server(4, service_s=1.5) as server:
        lm = make_lm(
            server.api_base, timeout=0.1, max_timeout=0.25, timeout_retries=2, max_concurrency=4
        )
        caplog.set_level(logging.WARNING, logger="policyopt")
        start = time.monotonic()
        with pytest.raises(LMError, match=r"timed out 3 times"):
            lm("q")
        wall = time.monotonic() - start
        assert len(server.received) == 3
        gaps = [b - a for a, b in zip(server.received, server.received[1:], strict=False)]
        # each retry waits for its timeout (0.1 s, then 0.2 s) and backs off at least as long
        assert gaps[0] >= 0.19 and gaps[1] >= 0.39, gaps
        assert wall < 3.0
        assert lm.usage.errors == 1 and lm.usage.calls == 0
        messages = [r.getMessage() for r in caplog.records]
        assert any("timed out after 0.10 s" in m and "timeout 0.20 s" in m for m in messages)
        assert any("timeout 0.25 s" in m for m in messages)  # doubled, then capped


def test_no_timeout_retries_without_retries() -> None:
    with slow_server(1, service_s=0.5) as server:
        lm = make_lm(server.api_base, timeout=0.1, num_retries=0)
        with pytest.raises(LMError, match="timed out 1 times"):
            lm("q")
        assert len(server.received) == 1


def test_bad_timeout_arguments() -> None:
    with pytest.raises(ConfigError, match="max_concurrency"):
        LM("openai/x", max_concurrency=0)
    with pytest.raises(ConfigError, match="timeout_retries"):
        LM("openai/x", timeout_retries=-1)
    with pytest.raises(ConfigError, match="max_timeout"):
        LM("openai/x", timeout=10, max_timeout=5)
    assert LM("openai/x", timeout=10).max_timeout == 40


def test_local_lm_is_bounded_by_its_slots() -> None:
    assert LocalLM(n_parallel=3).max_concurrency == 3
