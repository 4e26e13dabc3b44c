"""Client-side rate limits against a fake OpenAI-compatible server on loopback that enforces
requests and tokens per window and answers 429 beyond them; and the LM's async call."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from policyopt import LM
from policyopt.errors import ConfigError, LMError
from policyopt.lm import RateLimit
from policyopt.lm.base import _litellm
from policyopt.lm.limits import request_tokens
from policyopt.rollout.aio import await_blocking
from tests.fake_openai import fake_openai

pytestmark = pytest.mark.waits  # see tests/conftest.py


class LimitedServer:
    """Answers at most ``requests`` requests and ``tokens`` tokens per ``per`` seconds (a sliding
    window over arrivals, as a provider counts); beyond that a 429 with ``retry-after``. A
    request's tokens are counted as providers do for a TPM limit: prompt + ``max_tokens``."""

    def __init__(self, requests: int | None, tokens: int | None, per: float) -> None:
        self.requests, self.tokens, self.per = requests, tokens, per
        self.window: deque[tuple[float, int]] = deque()
        self.lock = threading.Lock()
        self.ok = 0
        self.rejected = 0
        self.httpd: ThreadingHTTPServer | None = None

    @property
    def api_base(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def admit(self, body: dict[str, Any]) -> bool:
        cost = request_tokens(body)
        with self.lock:
            now = time.monotonic()
            while self.window and self.window[0][0] <= now - self.per:
                self.window.popleft()
            over_requests = self.requests is not None and len(self.window) + 1 > self.requests
            used = sum(t for _, t in self.window)
            over_tokens = self.tokens is not None and used + cost > self.tokens
            if over_requests or over_tokens:
                self.rejected += 1
                return False
            self.window.append((now, cost))
            self.ok += 1
            return True

    def handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                if server.admit(body):
                    status, payload = (
                        200,
                        {
                            "id": "chatcmpl-limited",
                            "object": "chat.completion",
                            "created": 0,
                            "model": body.get("model", "fake"),
                            "choices": [
                                {
                                    "index": 0,
                                    "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": "ok"},
                                }
                            ],
                            "usage": {
                                "prompt_tokens": 10,
                                "completion_tokens": 1,
                                "total_tokens": 11,
                            },
                        },
                    )
                else:
                    status, payload = 429, {"error": {"message": "rate limit reached"}}
                data = json.dumps(payload).encode()
                self.send_response(status)
                if status == 429:
                    self.send_header("retry-after", "0.5")
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


@contextmanager
def limited_server(
    requests: int | None = None, tokens: int | None = None, per: float = 2.0
) -> Iterator[LimitedServer]:
    server = LimitedServer(requests, tokens, per)
    server.httpd = ThreadingHTTPServer(("127.0.0.1", 0), server.handler())
    server.httpd.daemon_threads = True
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def burst(lms: list[LM], n_threads: int, per_thread: int, n_coroutines: int) -> list[str]:
    """Calls from several threads (sync) and several coroutines (async) at once; the errors."""
    errors: list[str] = []

    def sync_calls(lm: LM, i: int) -> None:
        for j in range(per_thread):
            try:
                lm(f"thread {i} call {j}")
            except LMError as exc:
                errors.append(str(exc))

    async def async_calls() -> None:
        async def one(lm: LM, i: int) -> None:
            try:
                await lm.acall(f"coroutine {i}")
            except LMError as exc:
                errors.append(str(exc))

        await asyncio.gather(*(one(lms[i % len(lms)], i) for i in range(n_coroutines)))

    with ThreadPoolExecutor(n_threads + 1) as pool:
        futures = [pool.submit(sync_calls, lms[i % len(lms)], i) for i in range(n_threads)]
        futures.append(pool.submit(await_blocking, async_calls()))
        for future in futures:
            future.result(timeout=120)
    return errors


def lm(server: LimitedServer, **kwargs: Any) -> LM:
    return LM("openai/fake", api_base=server.api_base, api_key="x", num_retries=0, **kwargs)


def test_without_a_limit_the_burst_gets_429s() -> None:
    """The control: the same burst with no client-side limit is rejected by the server."""
    with limited_server(requests=6, per=2.0) as server:
        errors = burst([lm(server), lm(server)], n_threads=3, per_thread=4, n_coroutines=8)
    assert server.rejected > 0 and len(errors) == server.rejected
    assert "RateLimitError" in errors[0]


#: the client's window is longer than the server's by the delivery jitter a loaded machine adds
#: (a request sent at the window's edge can arrive later than one sent after it): as a user
#: sets a limit a little under the provider's
CLIENT_PER = 2.5


@pytest.mark.slow
def test_a_shared_request_limit_keeps_threads_and_coroutines_under_it() -> None:
    limit = RateLimit(requests=6, per=CLIENT_PER)
    with limited_server(requests=6, per=2.0) as server:
        start = time.monotonic()
        errors = burst(
            [lm(server, rate_limit=limit), lm(server, rate_limit=limit)],
            n_threads=3,
            per_thread=4,
            n_coroutines=8,
        )
        elapsed = time.monotonic() - start
    assert errors == [] and server.rejected == 0 and server.ok == 20
    assert elapsed >= 3 * CLIENT_PER  # 20 calls at 6 per window: the limit did the waiting
    assert limit.waits > 0


@pytest.mark.slow
def test_a_token_limit_counts_prompt_and_max_tokens() -> None:
    limit = RateLimit(tokens=150, per=CLIENT_PER)
    with limited_server(tokens=150, per=2.0) as server:
        start = time.monotonic()
        errors = burst(
            [lm(server, rate_limit=limit, max_tokens=30)], n_threads=2, per_thread=3, n_coroutines=4
        )
        elapsed = time.monotonic() - start
    # ~36 tokens a request: 4 fit a window, 10 requests need three windows
    assert errors == [] and server.rejected == 0 and server.ok == 10
    assert elapsed >= 2 * CLIENT_PER


def test_rpm_and_tpm_build_a_per_minute_limit_and_bad_limits_are_clear() -> None:
    one = LM("openai/fake", rpm=500, tpm=200_000)
    assert one.rate_limit is not None and one.rate_limit.per == 60.0
    assert (one.rate_limit.requests, one.rate_limit.tokens) == (500, 200_000)
    with pytest.raises(ConfigError, match="not both"):
        LM("openai/fake", rpm=5, rate_limit=RateLimit(requests=5))
    with pytest.raises(ConfigError, match="requests= or tokens="):
        RateLimit()
    with pytest.raises(ConfigError, match="'requests' parameter must be an int >= 1"):
        RateLimit(requests=0)
    with pytest.raises(ConfigError, match="'per' parameter"):
        RateLimit(requests=1, per=0)


def test_a_request_larger_than_the_token_limit_is_a_clear_error() -> None:
    with limited_server() as server:
        small = lm(server, rate_limit=RateLimit(tokens=20), max_tokens=100)
        with pytest.raises(ConfigError, match="more than the rate limit's tokens=20"):
            small("hello")
        assert server.ok == 0 and small.usage.errors == 1


def test_acall_shares_cache_usage_and_retry_after_with_the_sync_call(tmp_path: Any) -> None:
    with fake_openai([429, "first"], default="later") as fake:
        model = LM("openai/fake", api_base=fake.api_base, api_key="x", cache=tmp_path)
        start = time.monotonic()
        assert await_blocking(model.acall("q")) == "first"
        assert time.monotonic() - start >= 0.2  # the 429's retry-after was honoured
        assert model("q") == "first"  # the sync call reads what the async one cached
        assert await_blocking(model.acall("q")) == "first"
        usage = model.usage
        assert (usage.calls, usage.cache_hits, usage.prompt_tokens) == (1, 2, 10)
        assert len(fake.requests) == 2  # the 429 and the answer


def test_acall_times_out_and_gives_a_clear_error() -> None:
    with fake_openai(["hang", "hang"]) as fake:
        model = LM(
            "openai/fake",
            api_base=fake.api_base,
            api_key="x",
            timeout=0.5,
            timeout_retries=0,
            max_concurrency=2,
        )
        _litellm()  # imported off the clock (seconds on a loaded machine)
        start = time.monotonic()
        with pytest.raises(LMError, match="timed out 1 times"):
            await_blocking(model.acall("q"))
        assert time.monotonic() - start < 4.5  # the server holds it 5 s
        assert model.usage.errors == 1


def test_a_metered_view_counts_async_calls_too() -> None:
    from policyopt.lm.metered import MeteredLM

    with fake_openai(["a", "b"]) as fake:
        inner = LM("openai/fake", api_base=fake.api_base, api_key="x")
        view = MeteredLM(inner, max_tokens=7)
        assert await_blocking(view.acall("q")) == "a" and view("q2") == "b"
        assert view.usage.calls == 2 and inner.usage.calls == 2
        assert [r.get("max_tokens") for r in fake.requests] == [7, 7]
