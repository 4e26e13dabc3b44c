"""Async evaluate: coroutines on one event loop thread, with the engine's bookkeeping.

An ``async def evaluate(prompt, example)`` (or an object whose ``__call__`` is ``async def``)
runs on policyopt's event loop: one daemon thread with one asyncio loop for the whole process,
started on first use and shared by every engine. One loop for the process, rather than one per
engine, because async clients (httpx's, litellm's) bind to the loop they were first used on: an
``evaluate`` that keeps one client works across several runs.

:class:`AsyncSlots` runs a batch there: at most ``n`` evaluate tasks alive at once (the engine's
``n_jobs``: for an async evaluate it is the number of coroutines in flight, not threads), each
start recorded just before its coroutine is created, each result handed to the engine's
callback the moment it finishes (on the loop thread, so the journal gets it at once). A rollout
past its timeout is cancelled and recorded as failed; a stop request cancels the rollouts in
flight (paid, no result). A task that ignores cancellation keeps its slot until it ends, as a
hung thread does on the thread path, and when every slot is held so the batch's remaining
rollouts fail without being paid (``no_slot``). A coroutine that blocks (``time.sleep``, a sync
HTTP call) blocks the loop and every other rollout: await instead.

:func:`call_blocking` is the bridge for sync callers (process-backend workers, the task app,
peer optimizers): it calls ``evaluate`` and, when that gives an awaitable, waits for it on the
loop. The loop and the bridge live in :mod:`policyopt.rollout.loop` and are re-exported here.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from policyopt.prompts import fresh_copy
from policyopt.rollout.loop import (
    Blocking,
    EventLoopThread,
    await_blocking,
    call_blocking,
    is_async_callable,
    shared_loop,
)
from policyopt.rollout.worker import Outcome, classify, describe_exception

__all__ = [
    "AsyncSlots",
    "Blocking",
    "EventLoopThread",
    "await_blocking",
    "call_blocking",
    "is_async_callable",
    "shared_loop",
]

_T = TypeVar("_T")
_POLL_S = 0.1  # how often a waiting consumer looks at the cancel flag
_ACK_S = 2.0  # how long a stop waits for the loop to confirm (a blocked loop may not)


@dataclass(eq=False, slots=True)
class _Live:
    """One evaluate task in flight."""

    index: int
    token: Any
    start: float
    task: asyncio.Future[Any] | None = None
    settled: bool = False  # its outcome was handed on (a result, a timeout) or given up (stop)
    hung: bool = False  # settled while the task still runs: it holds a slot until it ends


class _Raise:
    """A message that makes the consumer raise ``exc`` (a crash of the callback or the loop)."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


@dataclass(eq=False)
class _Batch(Generic[_T]):
    """One engine batch on the loop: what is left to start, what runs, where results go."""

    pending: deque[tuple[int, Any, Any]]
    out: queue.SimpleQueue[Any]
    evaluate: Callable[[Any, Any], Any]
    timeout: float | None
    on_start: Callable[[int], Any]
    on_done: Callable[[int, Outcome, Any], _T]
    live: set[_Live] = field(default_factory=set)
    by_start: deque[_Live] = field(default_factory=deque)  # for timeouts: oldest first
    sweeping: bool = False
    outbox: list[_T] = field(default_factory=list)  # results handed over once per loop turn
    stopped: bool = False
    ack: threading.Event = field(default_factory=threading.Event)


class AsyncSlots:
    """At most ``n`` live evaluate tasks of one engine on policyopt's loop (see the module doc)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.running = 0  # evaluate tasks alive, hung ones included (loop thread only)
        self.hung = 0  # tasks that timed out or were given up and still run
        self._runner = shared_loop()
        self._wake: asyncio.Event | None = None
        self._tasks: set[asyncio.Future[Any]] = set()

    # ------------------------------------------------------------------ consumer side
    def run(
        self,
        items: Sequence[tuple[int, Any, Any]],
        evaluate: Callable[[Any, Any], Any],
        timeout: float | None,
        *,
        cancelled: Callable[[], bool],
        on_start: Callable[[int], Any],
        on_done: Callable[[int, Outcome, Any], _T],
    ) -> Iterator[_T]:
        """Run ``(index, prompt, example)`` items; yield ``on_done``'s values as they finish.

        ``on_start(index)`` is called on the loop just before a rollout's coroutine is created
        (it records the start and returns a token); ``on_done(index, outcome, token)`` on the
        loop as soon as it finished (token None when it never started). When ``cancelled()``
        turns true the rollouts in flight are cancelled and the iteration ends with what had
        finished.
        """
        if self._runner.thread is not shared_loop().thread:  # a fork or a dead loop: a new one
            self._runner, self.running, self.hung, self._tasks = shared_loop(), 0, 0, set()
        out: queue.SimpleQueue[Any] = queue.SimpleQueue()
        batch: _Batch[_T] = _Batch(deque(items), out, evaluate, timeout, on_start, on_done)
        self._runner.submit(self._schedule(batch))
        received = 0
        try:
            while received < len(items):
                if cancelled():
                    break
                try:
                    message = out.get(timeout=_POLL_S)
                except queue.Empty:
                    if not self._runner.thread.is_alive():
                        raise RuntimeError("policyopt's event loop thread died") from None
                    continue
                if isinstance(message, _Raise):
                    raise message.exc
                received += len(message)
                yield from message
        except BaseException:
            self._stop(batch)
            raise
        if received < len(items):
            self._stop(batch)
            while True:  # what finished before the stop is journaled: hand it on too
                try:
                    message = out.get_nowait()
                except queue.Empty:
                    return
                if isinstance(message, _Raise):
                    raise message.exc
                yield from message

    def _stop(self, batch: _Batch[Any]) -> None:
        self._runner.call_soon(self._stop_on_loop, batch)
        batch.ack.wait(_ACK_S)

    def close(self) -> None:
        """Cancel this engine's tasks still running (hung ones included)."""
        tasks = list(self._tasks)
        for task in tasks:
            self._runner.call_soon(task.cancel)

    # ------------------------------------------------------------------ loop side
    async def _schedule(self, batch: _Batch[Any]) -> None:
        wake = asyncio.Event()
        self._wake = wake
        try:
            while batch.pending and not batch.stopped:
                if self.running >= self.n:
                    if self.hung >= self.n:
                        self._no_slots(batch)
                        return
                    wake.clear()
                    await wake.wait()
                    continue
                index, prompt, example = batch.pending.popleft()
                self._launch(batch, index, prompt, example)
        except BaseException as exc:  # on_start failed (e.g. the journal): the consumer raises
            batch.out.put(_Raise(exc))
        finally:
            if self._wake is wake:
                self._wake = None

    def _no_slots(self, batch: _Batch[Any]) -> None:
        message = (
            f"all {self.n} rollout slots are held by evaluate coroutines that timed out and "
            "still run (they ignore cancellation: let CancelledError propagate)"
        )
        while batch.pending:
            index = batch.pending.popleft()[0]
            self._hand_on(batch, index, Outcome(index, "no_slot", None, message, 0.0), None)

    def _launch(self, batch: _Batch[Any], index: int, prompt: Any, example: Any) -> None:
        token = batch.on_start(index)
        live = _Live(index, token, time.perf_counter())
        try:
            value = batch.evaluate(fresh_copy(prompt), example)
        except Exception as exc:
            outcome = Outcome(
                index, "error", None, describe_exception(exc), time.perf_counter() - live.start
            )
            self._hand_on(batch, index, outcome, token)
            return
        if not inspect.isawaitable(value):
            self._hand_on(batch, index, classify(index, value, 0.0), token)
            return
        task = asyncio.ensure_future(value)
        live.task = task
        self.running += 1
        self._tasks.add(task)
        batch.live.add(live)
        if batch.timeout is not None:
            batch.by_start.append(live)
            if not batch.sweeping:
                batch.sweeping = True
                asyncio.get_running_loop().call_later(
                    min(batch.timeout, _POLL_S), self._sweep, batch
                )
        task.add_done_callback(functools.partial(self._finished, batch, live))

    def _finished(self, batch: _Batch[Any], live: _Live, task: asyncio.Future[Any]) -> None:
        self.running -= 1
        self._tasks.discard(task)
        if live.hung:
            self.hung -= 1
        batch.live.discard(live)
        if self._wake is not None:
            self._wake.set()
        if live.settled:
            if not task.cancelled():
                task.exception()  # retrieved: no "exception never retrieved" noise
            return
        live.settled = True
        elapsed = time.perf_counter() - live.start
        if task.cancelled():
            outcome = Outcome(live.index, "error", None, "evaluate was cancelled", elapsed)
        else:
            exc = task.exception()
            if exc is None:
                outcome = classify(live.index, task.result(), elapsed)
            elif isinstance(exc, Exception):
                outcome = Outcome(live.index, "error", None, describe_exception(exc), elapsed)
            else:  # KeyboardInterrupt, SystemExit inside evaluate: raised in the caller
                batch.out.put(_Raise(exc))
                return
        self._hand_on(batch, live.index, outcome, live.token)

    def _sweep(self, batch: _Batch[Any]) -> None:
        """Expire the rollouts past their timeout (one timer per batch, not one per rollout:
        a timer each cost ~15% of the throughput at 500 in flight)."""
        assert batch.timeout is not None
        now = time.perf_counter()
        order = batch.by_start
        while order and (order[0].settled or order[0].start + batch.timeout <= now):
            self._expire(batch, order.popleft())
        if order and not batch.stopped:
            delay = min(_POLL_S, max(0.0, order[0].start + batch.timeout - now))
            asyncio.get_running_loop().call_later(delay, self._sweep, batch)
        else:
            batch.sweeping = False

    def _expire(self, batch: _Batch[Any], live: _Live) -> None:
        if live.settled or live.task is None:
            return
        live.settled = live.hung = True
        self.hung += 1
        live.task.cancel()
        if self._wake is not None:  # the scheduler may now see every slot hung
            self._wake.set()
        outcome = Outcome(
            live.index,
            "error",
            None,
            f"TimeoutError: evaluate did not return within the {batch.timeout:g} s rollout timeout",
            time.perf_counter() - live.start,
        )
        self._hand_on(batch, live.index, outcome, live.token)

    def _hand_on(self, batch: _Batch[Any], index: int, outcome: Outcome, token: Any) -> None:
        if batch.stopped:
            return
        try:
            result = batch.on_done(index, outcome, token)
        except BaseException as exc:
            batch.out.put(_Raise(exc))
            return
        # one hand-over per loop turn, not per rollout: every put wakes the consumer thread,
        # and that GIL hand-off cost ~10% of the throughput at 500 in flight
        if not batch.outbox:
            asyncio.get_running_loop().call_soon(self._flush, batch)
        batch.outbox.append(result)

    def _flush(self, batch: _Batch[Any]) -> None:
        if batch.outbox:
            batch.out.put(batch.outbox)
            batch.outbox = []

    def _stop_on_loop(self, batch: _Batch[Any]) -> None:
        batch.stopped = True
        for live in list(batch.live):
            if not live.settled and live.task is not None:
                live.settled = live.hung = True  # paid, no result: its slot stays until it ends
                self.hung += 1
                live.task.cancel()
        if self._wake is not None:
            self._wake.set()
        self._flush(batch)  # what finished (and was journaled) goes to the consumer
        batch.ack.set()
