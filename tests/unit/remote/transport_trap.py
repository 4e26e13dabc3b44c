"""Catch every request litellm would send, at the transport, so nothing leaves the machine.

httpx's sync and async transports record the request (URL, headers, body) and answer it with
a 401 (an error no client retries, so the survey stays fast); ``socket`` connects and name
look-ups made by anything else (botocore's instance-metadata client, aiohttp) are recorded and
refused.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
import pytest

__all__ = ["Sent", "Trap", "trap_transport"]

_REFUSED = {"error": {"message": "trapped: nothing leaves the machine", "type": "auth"}}


@dataclass
class Sent:
    """One request caught: where it went and everything it carried, as text."""

    host: str
    text: str


@dataclass
class Trap:
    """What was caught: HTTP requests, and raw connects / look-ups (host names)."""

    requests: list[Sent] = field(default_factory=list)
    connects: list[str] = field(default_factory=list)

    def hosts(self) -> set[str]:
        return {r.host for r in self.requests} | set(self.connects)

    def carrying(self, secret: str) -> set[str]:
        """Hosts of the requests whose URL, headers or body hold ``secret``."""
        return {r.host for r in self.requests if secret in r.text}

    def clear(self) -> None:
        self.requests.clear()
        self.connects.clear()


def _text(request: httpx.Request) -> str:
    try:
        body = request.read().decode("utf-8", "replace")
    except Exception:  # a streamed body: its length is enough to know nothing was read
        body = ""
    headers = "\n".join(f"{k}: {v}" for k, v in request.headers.items())
    return f"{request.url}\n{headers}\n{body}"


@contextmanager
def trap_transport() -> Iterator[Trap]:
    """Patch httpx's transports and ``socket`` for the block; yields the :class:`Trap`."""
    trap = Trap()

    def caught(request: httpx.Request) -> httpx.Response:
        trap.requests.append(Sent(request.url.host, _text(request)))
        return httpx.Response(401, json=_REFUSED, request=request)

    def handle(self: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
        return caught(request)

    async def ahandle(self: httpx.AsyncHTTPTransport, request: httpx.Request) -> httpx.Response:
        return caught(request)

    def connect(self: socket.socket, address: object) -> None:
        trap.connects.append(str(address[0] if isinstance(address, tuple) else address))
        raise ConnectionRefusedError("trapped: nothing leaves the machine")

    def resolve(host: object, *args: object, **kwargs: object) -> object:
        trap.connects.append(str(host))
        raise socket.gaierror(socket.EAI_NONAME, "trapped: no name look-ups")

    def create_connection(address: object, *args: object, **kwargs: object) -> None:
        connect(None, address)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(httpx.HTTPTransport, "handle_request", handle)
        patch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", ahandle)
        patch.setattr(socket.socket, "connect", connect)
        patch.setattr(socket.socket, "connect_ex", connect)
        patch.setattr(socket, "getaddrinfo", resolve)
        patch.setattr(socket, "create_connection", create_connection)
        yield trap
