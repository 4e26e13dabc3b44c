"""The one request-body limit: the job server and the task apps answer a malformed or too large
``Content-Length`` the same way (400 and 413), before any route runs.

uvicorn's h11 parser already refuses a non-numeric ``Content-Length``, so these requests are
driven through the ASGI interface itself, as any other ASGI server would hand them over.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from policyopt import Program
from policyopt.remote.server.app import create_app
from policyopt.remote.taskapp.app import task_app

LIMIT = 4096


async def _call(app: Any, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> Any:
    """One POST through the app's ASGI interface: (status, JSON answer)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            (b"authorization", b"Bearer k"),  # the server's key; the task app asks none
            *headers,
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }
    sent: list[dict[str, Any]] = []
    chunks = [body]

    async def receive() -> dict[str, Any]:
        if chunks:
            return {"type": "http.request", "body": chunks.pop(), "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(content)


@pytest.fixture()
def apps(tmp_path: Path) -> Iterator[dict[str, tuple[Any, str]]]:
    """The job server's app and a task app, both limited to LIMIT bytes: (app, POST path)."""
    server = create_app(tmp_path / "jobs.db", tmp_path / "runs", ["k"], max_body_bytes=LIMIT)
    tasks = task_app(Program("p", lambda p, e: 1.0), {"train": [{"id": "a"}]}, max_body_bytes=LIMIT)
    yield {
        "server": (server, "/api/policy-optimization/online/jobs"),
        "task_app": (tasks, "/rollout"),
    }
    server.state.store.close()


@pytest.mark.parametrize(
    "declared", [b"abc", b"-1", b"+5", b" 5", b"1_0", b"5.0", b"0x10", b"", "\u0665".encode()]
)
def test_a_malformed_content_length_is_400_on_both(
    apps: dict[str, tuple[Any, str]], declared: bytes
) -> None:
    answers = {
        name: _run(_call(app, path, [(b"content-length", declared)], b"{}"))
        for name, (app, path) in apps.items()
    }
    assert answers["server"] == answers["task_app"]
    assert answers["server"] == (400, {"detail": "Content-Length is not a number."})


@pytest.mark.parametrize(
    "headers",
    [
        [(b"content-length", str(LIMIT + 1).encode())],
        [(b"content-length", b"2"), (b"content-length", str(10 * LIMIT).encode())],
    ],
)
def test_a_declared_length_over_the_limit_is_413_on_both(
    apps: dict[str, tuple[Any, str]], headers: list[tuple[bytes, bytes]]
) -> None:
    answers = {name: _run(_call(app, path, headers, b"{}")) for name, (app, path) in apps.items()}
    assert answers["server"] == answers["task_app"]
    assert answers["server"] == (413, {"detail": f"Request body too large: at most {LIMIT} bytes."})


def _run(coro: Any) -> Any:
    """Run ``coro`` on a loop of its own, never made the thread's (asyncio.run() would replace,
    and drop unclosed, a loop an earlier test made the main thread's)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def test_a_body_over_the_limit_without_a_length_is_413_on_both(
    apps: dict[str, tuple[Any, str]],
) -> None:
    big = b'{"example_id": "a", "prompt": "' + b"x" * (2 * LIMIT) + b'"}'
    answers = {name: _run(_call(app, path, [], big)) for name, (app, path) in apps.items()}
    assert answers["server"] == answers["task_app"]
    assert answers["server"] == (413, {"detail": f"Request body too large: at most {LIMIT} bytes."})
