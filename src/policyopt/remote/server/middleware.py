"""The job server's ASGI middlewares: the request-body size limit, and the fast path of the
status route that clients poll."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["BodyLimit", "StatusFastPath"]


class _BodyTooLarge(Exception):
    """The streamed request body went past the limit."""


class BodyLimit:
    """ASGI middleware: 413 for a body over ``limit`` bytes, by header and by bytes received."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_json(send, 400, "Content-Length is not a number.")
                    return
                if declared > self.limit:
                    await _send_json(send, 413, self._message())
                    return
        received = 0
        started = False

        async def limited_receive() -> Any:
            nonlocal received
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if message.get("type") == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _send_json(send, 413, self._message())

    def _message(self) -> str:
        return f"Request body too large: the limit is {self.limit} bytes."


class StatusFastPath:
    """ASGI middleware: ``GET <root>/{id}`` (the route clients poll, hundreds at a time) is
    answered here, by the same function as the FastAPI route, without FastAPI's routing and
    dependency machinery (a third of the cost of an answer). Everything else passes through."""

    def __init__(
        self, app: Any, answer: Callable[[str, str | None], Any], roots: tuple[str, ...]
    ) -> None:
        self.app = app
        self.answer = answer
        self.prefixes = tuple(root + "/" for root in roots)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            for prefix in self.prefixes:
                if path.startswith(prefix):
                    job_id = path[len(prefix) :]
                    if job_id and "/" not in job_id:
                        header = None
                        for name, value in scope["headers"]:
                            if name == b"authorization":
                                header = value.decode("latin-1")
                                break
                        await self.answer(job_id, header)(scope, receive, send)
                        return
                    break
        await self.app(scope, receive, send)


async def _send_json(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
