"""Serve an ASGI app with uvicorn: in a background thread (tests, embedding) or in the
foreground (the CLI). Binding the socket ourselves gives the real port when asked for port 0.

Every server here is guarded against slow clients (:func:`uvicorn_config`): uvicorn's h11
protocol has no timeout for reading a request, so a client that sends a header line every few
seconds held its connection forever, and about a thousand of them took a server offline.
:class:`GuardedH11Protocol` closes a connection whose request headers have not all arrived
within ``header_timeout_s`` of its start (or of the previous response), and one whose body has
not arrived within ``body_timeout_s``; uvicorn's ``limit_concurrency`` answers 503 past a
number of connections and its keep-alive timeout closes idle ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = [
    "BODY_TIMEOUT_S",
    "HEADER_TIMEOUT_S",
    "KEEP_ALIVE_S",
    "MAX_CONNECTIONS",
    "GuardedH11Protocol",
    "ServerThread",
    "bind",
    "exit_later",
    "serve_forever",
    "serve_in_thread",
    "uvicorn_config",
]

#: seconds a client has to send all of a request's headers
HEADER_TIMEOUT_S = 10.0
#: seconds a client has to send a whole request, body included
BODY_TIMEOUT_S = 60.0
#: seconds an idle keep-alive connection stays open
KEEP_ALIVE_S = 5
#: connections at once; past it, requests are answered 503 (uvicorn's limit_concurrency)
MAX_CONNECTIONS = 1000


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on reading each request (see the module
    docstring). Responses being sent (an event stream) are never cut: only a client that has
    not finished *sending* its request is closed."""

    header_timeout_s = HEADER_TIMEOUT_S
    body_timeout_s = BODY_TIMEOUT_S

    _read_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout_s, self._headers_due)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():  # the next request on this connection
            self._arm(self.header_timeout_s, self._headers_due)

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self._read_timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _headers_due(self) -> None:
        self._read_timer = None
        if self.conn.their_state is h11.IDLE and self.cycle_idle():
            self._close()
        elif self.conn.their_state is h11.SEND_BODY:
            left = max(0.0, self.body_timeout_s - self.header_timeout_s)
            self._arm(left, self._body_due)

    def _body_due(self) -> None:
        self._read_timer = None
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and self.cycle_idle():
            self._close()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request h11 cannot parse (non-ASCII bytes in its target, a
        NUL in a header, a malformed Content-Length), as JSON like every other error."""
        detail = (
            "Malformed HTTP request: the request line or a header is not valid HTTP/1.1 "
            "(bytes that are not ASCII, a control character, or a bad Content-Length)."
        )
        body = json.dumps({"detail": detail}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()

    def cycle_idle(self) -> bool:
        """True while no response is being sent on this connection."""
        return self.cycle is None or self.cycle.response_complete or not self.cycle.response_started

    def _close(self) -> None:
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app's receive() answers http.disconnect
            self.cycle.message_event.set()
        with contextlib.suppress(h11.LocalProtocolError):
            self.conn.send(h11.ConnectionClosed())
        self.transport.close()


def uvicorn_config(app: Any, **options: Any) -> Any:
    """A ``uvicorn.Config`` for ``app`` with the slow-client guards on (see the module
    docstring); ``options`` are more ``uvicorn.Config`` arguments (they win)."""
    import uvicorn

    settings: dict[str, Any] = {
        "http": GuardedH11Protocol,
        "limit_concurrency": MAX_CONNECTIONS,
        "timeout_keep_alive": KEEP_ALIVE_S,
    }
    settings.update(options)
    return uvicorn.Config(app, **settings)


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one), address reuse on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class ServerThread:
    """uvicorn serving ``app`` in a daemon thread; ``start()`` returns once it accepts
    connections, ``stop()`` shuts it down gracefully (start again to restart, same port)."""

    def __init__(
        self, app: Any, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.log_level = log_level
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        return _url(self.host, self.port)

    def start(self, timeout: float = 20.0) -> ServerThread:
        """Start serving; raises RuntimeError if uvicorn is not up within ``timeout`` s."""
        import uvicorn

        if self._thread is not None:
            raise RuntimeError("the server is already running; stop() it first")
        self._sock = bind(self.host, self.port)
        self.port = self._sock.getsockname()[1]
        config = uvicorn_config(
            self.app, log_level=self.log_level, access_log=False, timeout_graceful_shutdown=5
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            name=f"uvicorn:{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to exit, wait for its thread, close the socket."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None

    def __enter__(self) -> ServerThread:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def serve_in_thread(app: Any, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """``with serve_in_thread(app) as url:`` serves ``app`` until the block ends."""
    server = ServerThread(app, host=host, port=port).start()
    try:
        yield server.url
    finally:
        server.stop()


def serve_forever(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8001,
    log_level: str = "info",
    on_ready: Callable[[str], object] | None = None,
) -> None:
    """Serve ``app`` in the foreground until Ctrl-C; ``on_ready(url)`` once bound."""
    import uvicorn

    sock = bind(host, port)
    url = _url(host, sock.getsockname()[1])
    if on_ready is not None:
        on_ready(url)
    server = uvicorn.Server(uvicorn_config(app, log_level=log_level))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


_exit_timer: threading.Timer | None = None


def exit_later(seconds: float) -> None:
    """End the process ``seconds`` from now unless it has ended by then (once)."""
    global _exit_timer
    if _exit_timer is not None:
        return

    def stop() -> None:
        logging.getLogger("policyopt").error(
            "the server did not stop within %.0f s of the signal; exiting now", seconds
        )
        os._exit(1)

    _exit_timer = threading.Timer(seconds, stop)
    _exit_timer.daemon = True
    _exit_timer.start()
