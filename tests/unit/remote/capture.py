"""A capture server for the security tests: an HTTP server on 127.0.0.1 that records every
request it gets (method, path, query, headers) and answers what it is told to. It stands for
whatever must NOT be reached: an internal admin service, a host that would steal a key."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from policyopt.remote._serving import serve_in_thread

__all__ = ["Capture", "capture_server"]


@dataclass
class Capture:
    """What the server got, and what it answers (``status``, ``body``, ``content_type``)."""

    url: str = ""
    status: int = 200
    body: bytes = b'{"status": "ok"}'
    content_type: str = "application/json"
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def seen(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.requests)

    def authorizations(self) -> list[str]:
        return [r["headers"].get("authorization", "") for r in self.seen()]


@contextmanager
def capture_server(**answer: Any) -> Iterator[Capture]:
    """``with capture_server(status=404, body=b"...") as cap:`` serves until the block ends."""
    capture = Capture(**answer)

    async def record(request: Request) -> Response:
        with capture.lock:
            capture.requests.append(
                {
                    "method": request.method,
                    "path": request.url.path,
                    "query": request.url.query,
                    "headers": dict(request.headers),
                }
            )
        return Response(capture.body, capture.status, media_type=capture.content_type)

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH"]
    app = Starlette(routes=[Route("/{path:path}", record, methods=methods)])
    with serve_in_thread(app) as url:
        capture.url = url
        yield capture
