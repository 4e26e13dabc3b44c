"""policyopt's event loop: one daemon thread with one asyncio loop for the whole process.

Started on first use and shared by every engine (async clients bind to the loop they were first
used on). :func:`call_blocking` and :func:`await_blocking` are the bridge for sync callers
(process-backend workers, the task app, peer optimizers, :mod:`policyopt.rollout.worker`).

Its own module, below both :mod:`policyopt.rollout.worker` and :mod:`policyopt.rollout.aio`, so
that the worker can await an async ``evaluate`` without importing the async engine that builds on
it; :mod:`policyopt.rollout.aio` re-exports every name.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from policyopt.errors import ConfigError

__all__ = [
    "Blocking",
    "EventLoopThread",
    "await_blocking",
    "call_blocking",
    "is_async_callable",
    "shared_loop",
]

_T = TypeVar("_T")


def is_async_callable(fn: object) -> bool:
    """True for ``async def`` functions, partials of them and objects with an async ``__call__``."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    if isinstance(fn, type):
        return False
    return inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004


class EventLoopThread:
    """One asyncio loop running forever on one daemon thread."""

    def __init__(self, name: str = "policyopt-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self.crashed: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        while True:
            try:
                self.loop.run_forever()
                return  # stopped on purpose
            except BaseException as exc:  # KeyboardInterrupt/SystemExit raised inside a task
                # The task keeps the exception and its waiter re-raises it; the loop goes on.
                self.crashed = exc

    @property
    def thread(self) -> threading.Thread:
        """The thread the loop runs on."""
        return self._thread

    def submit(self, coro: Coroutine[Any, Any, _T]) -> Any:
        """Schedule ``coro`` on the loop from any other thread; a concurrent future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call_soon(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop thread, soon."""
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        """Stop the loop and let its thread end (tasks still running are dropped); the loop
        is closed once its thread has ended (an unclosed loop leaks its self-pipe sockets)."""
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.close_if_dead()

    def close_if_dead(self) -> None:
        """Close the loop when its thread is no longer running it."""
        if not self._thread.is_alive() and not self.loop.is_closed():
            self.loop.close()


_shared: EventLoopThread | None = None
_shared_pid = 0
_shared_lock = threading.Lock()


def shared_loop() -> EventLoopThread:
    """policyopt's event loop thread for this process (a forked child starts its own)."""
    global _shared, _shared_pid
    with _shared_lock:
        if _shared is None or _shared_pid != os.getpid() or not _shared.thread.is_alive():
            if _shared is not None and _shared_pid == os.getpid():
                _shared.close_if_dead()  # the dead loop's sockets, not left to the GC
            _shared = EventLoopThread()
            _shared_pid = os.getpid()
        return _shared


def call_blocking(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` from sync code; an awaitable it returns is awaited on policyopt's loop."""
    value = fn(*args)
    return await_blocking(value) if inspect.isawaitable(value) else value


def await_blocking(awaitable: Any) -> Any:
    """Wait from sync code (any thread but the loop's) for ``awaitable`` on policyopt's loop."""
    runner = shared_loop()
    if threading.current_thread() is runner.thread:
        close = getattr(awaitable, "close", None)
        if callable(close):
            close()
        raise ConfigError(
            "A sync function called an async evaluate from inside policyopt's event loop, "
            "which would deadlock: make the calling function async and await it."
        )
    return runner.submit(_awaited(awaitable)).result()


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


class Blocking:
    """A sync, picklable wrapper of an async ``evaluate`` (for process backends and peers)."""

    def __init__(self, evaluate: Callable[[Any, Any], Any]) -> None:
        self.evaluate = evaluate

    def __call__(self, prompt: Any, example: Any) -> Any:
        return call_blocking(self.evaluate, prompt, example)

    def __repr__(self) -> str:
        return f"Blocking({self.evaluate!r})"
