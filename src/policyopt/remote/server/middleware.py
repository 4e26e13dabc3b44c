"""The job server's own ASGI middleware: the fast path of the status route that clients poll
(the request-body limit, shared with the task apps, is :class:`policyopt.remote.asgi.BodyLimit`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["StatusFastPath"]


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
