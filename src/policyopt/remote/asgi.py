"""The request-body limit both the job server and the task apps put in front of their routes.

One rule for every server here: a ``Content-Length`` that is not a plain decimal number (RFC 9110:
``1*DIGIT``) is a malformed request, 400; a body over the limit is 413, whether it is declared
in ``Content-Length`` or only counted as it streams in (a chunked body has no length). Both
answers are JSON ``{"detail": ...}``, like every other error.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["BodyLimit", "send_json"]


class BodyLimit:
    """ASGI middleware: 400 for a malformed ``Content-Length``, 413 for a body over ``limit``
    bytes, by header and by the bytes received."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.exceptions import HTTPException
        from starlette.requests import ClientDisconnect

        for name, value in scope.get("headers") or ():
            if name == b"content-length":
                if not value.isdigit():
                    await send_json(send, 400, "Content-Length is not a number.")
                    return
                if int(value) > self.limit:
                    await send_json(send, 413, self.detail())
                    return
        received = 0
        started = False

        async def limited_receive() -> Any:
            nonlocal received
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # an HTTPException, so that FastAPI answers 413 while it reads a body
                    # parameter (any other exception there would become its 400)
                    raise HTTPException(status_code=413, detail=self.detail())
            return message

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if message.get("type") == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except HTTPException as exc:
            if exc.status_code != 413 or started:
                raise
            await send_json(send, 413, self.detail())
        except ClientDisconnect:
            # the client left (or its body was malformed HTTP, answered 400 by the protocol)
            # before its body arrived: no one to answer, and nothing went wrong here
            pass

    def detail(self) -> str:
        """The 413 answer's sentence (it names the limit)."""
        return f"Request body too large: at most {self.limit} bytes."


async def send_json(send: Any, status: int, detail: str) -> None:
    """Answer ``{"detail": detail}`` with ``status`` and close the connection (the request's
    body, if any, is left unread)."""
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
