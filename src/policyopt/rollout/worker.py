"""Running one rollout: in another process (:func:`execute`) or in this one (:class:`Slots`);
and the joblib pool that runs many (:class:`Pool`).

:func:`execute` is module-level and free of engine state so that any joblib backend can pickle
it. :class:`Slots` runs ``evaluate`` in-process on a thread of its own, so a hung call can be
abandoned (on its timeout, Ctrl-C or a stop request) while at most ``n`` calls, hung ones
included, are alive at once: timed-out threads never pile up past ``n_jobs``. An ``evaluate``
that returns an awaitable here (an async one on a process backend, or a sync wrapper of one) is
awaited on policyopt's event loop (:mod:`policyopt.rollout.aio`); in-process async rollouts do
not come here at all.
"""

from __future__ import annotations

import inspect
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import joblib

from policyopt.errors import ScoreTypeError
from policyopt.prompts import fresh_copy
from policyopt.rollout.loop import await_blocking
from policyopt.types import Score, encodable, is_finite, normalize_score

__all__ = ["Outcome", "Pool", "Slots", "awaited", "classify", "describe_exception", "execute"]

_POLL_S = 0.1  # how often a waiting rollout looks at the cancel flag


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one rollout produced; ``kind`` says which.

    ``ok``: a score. ``error``: evaluate raised, timed out or scored non-finite (a recorded
    failure). ``type_error``: evaluate returned something that is not a score (a bug: the run
    raises). ``cancelled``: never started. ``abandoned``: started, then given up on a stop
    request (paid, no result). ``no_slot``: not started because every slot is held by a hung
    call (a failure that costs nothing).
    """

    index: int
    kind: str
    score: Score | None
    error: str | None
    duration_s: float


def describe_exception(exc: BaseException) -> str:
    """``Type: message (at file:line)`` of an exception raised by ``evaluate`` (lone surrogates
    replaced: the text goes to logs, terminals and files that cannot hold them)."""
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
    return encodable(f"{type(exc).__name__}: {exc}{where}")


def classify(index: int, raw: object, elapsed: float) -> Outcome:
    """Turn what ``evaluate`` returned into an :class:`Outcome` (the score normalised once)."""
    try:
        score = normalize_score(raw)
    except ScoreTypeError as exc:
        return Outcome(index, "type_error", None, str(exc), elapsed)
    if not is_finite(score):
        return Outcome(
            index, "error", None, f"evaluate returned a non-finite score {score.score!r}", elapsed
        )
    return Outcome(index, "ok", score, None, elapsed)


def execute(
    index: int,
    evaluate: Callable[[Any, Any], object],
    prompt: Any,
    example: Any,
    timeout: float | None,
) -> Outcome:
    """Call ``evaluate(prompt, example)`` once and classify what happened (any process).

    With a ``timeout`` the call runs as an in-process rollout would (:class:`Slots`); without
    one, directly on this worker.
    """
    if timeout is not None:
        return Slots(1).call(
            index, evaluate, prompt, example, timeout, cancelled=_never, on_start=_nothing
        )
    start = time.perf_counter()
    try:
        raw = awaited(evaluate(fresh_copy(prompt), example))
    except Exception as exc:
        return Outcome(index, "error", None, describe_exception(exc), time.perf_counter() - start)
    return classify(index, raw, time.perf_counter() - start)


def awaited(value: object) -> object:
    """``value``, or its result when it is awaitable: an async ``evaluate`` called from a
    thread or another process (or a sync wrapper of one) is awaited on policyopt's loop."""
    if not inspect.isawaitable(value):
        return value
    return await_blocking(value)


def _never() -> bool:
    return False


def _nothing() -> None:
    return None


class Slots:
    """At most ``n`` live in-process ``evaluate`` calls; a hung call keeps its slot until it
    returns, and callers stop waiting when ``cancelled()`` turns true."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._free = threading.BoundedSemaphore(n)
        self._lock = threading.Lock()
        self.hung = 0  # calls that timed out or were abandoned and still run

    def call(
        self,
        index: int,
        evaluate: Callable[[Any, Any], object],
        prompt: Any,
        example: Any,
        timeout: float | None,
        *,
        cancelled: Callable[[], bool],
        on_start: Callable[[], None],
    ) -> Outcome:
        """Run one rollout; ``on_start`` is called (and must record the start) just before."""
        while not self._free.acquire(timeout=_POLL_S):
            if cancelled():
                return Outcome(index, "cancelled", None, None, 0.0)
            with self._lock:
                all_hung = self.hung >= self.n
            if all_hung:
                return Outcome(
                    index,
                    "no_slot",
                    None,
                    f"all {self.n} rollout slots are held by evaluate calls that timed out and "
                    "are still running (evaluate hangs; give it a timeout of its own)",
                    0.0,
                )
        if cancelled():
            self._free.release()
            return Outcome(index, "cancelled", None, None, 0.0)
        try:
            on_start()
        except BaseException:
            self._free.release()
            raise
        box: dict[str, Any] = {}
        done = threading.Event()

        def target() -> None:
            try:
                box["value"] = awaited(evaluate(fresh_copy(prompt), example))
            except BaseException as exc:  # reported by the waiting thread
                box["error"] = exc
            finally:
                with self._lock:
                    if box.get("hung"):
                        self.hung -= 1
                    box["done"] = True
                self._free.release()
                done.set()

        start = time.perf_counter()
        threading.Thread(target=target, name="policyopt-rollout", daemon=True).start()
        deadline = None if timeout is None else start + timeout
        while not done.wait(
            _POLL_S if deadline is None else max(0.0, min(_POLL_S, deadline - time.perf_counter()))
        ):
            stop = cancelled()
            late = deadline is not None and time.perf_counter() >= deadline
            if stop or late:
                with self._lock:
                    if not box.get("done"):
                        box["hung"] = True
                        self.hung += 1
                if box.get("hung"):
                    elapsed = time.perf_counter() - start
                    if stop:
                        return Outcome(index, "abandoned", None, "stopped", elapsed)
                    return Outcome(
                        index,
                        "error",
                        None,
                        f"TimeoutError: evaluate did not return within the {timeout:g} s "
                        "rollout timeout",
                        elapsed,
                    )
        elapsed = time.perf_counter() - start
        if "error" in box:
            error = box["error"]
            if not isinstance(error, Exception):  # KeyboardInterrupt, SystemExit in evaluate
                raise error
            return Outcome(index, "error", None, describe_exception(error), elapsed)
        return classify(index, box["value"], elapsed)


class Pool:
    """A joblib pool kept open across batches (one per batch would start workers every time),
    closed by :meth:`close` or when the pool is garbage collected."""

    def __init__(self, n_jobs: int, backend: Any) -> None:
        self.n_jobs = n_jobs
        self.backend = backend
        self._parallel: joblib.Parallel | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    def __call__(self, tasks: Iterable[Any]) -> Any:
        """Run joblib ``tasks``; their results as they finish (see :meth:`return_as`)."""
        if self._parallel is None:
            parallel = joblib.Parallel(
                n_jobs=self.n_jobs,
                backend=self.backend,
                prefer="threads",
                return_as=self.return_as(),
            )
            parallel.__enter__()
            self._parallel = parallel
            self._finalizer = weakref.finalize(self, parallel.__exit__, None, None, None)
        return self._parallel(tasks)

    def return_as(self) -> str:
        """Results as they finish, or the whole batch at once on a backend that cannot stream.

        joblib's Ray backend refuses ``generator_unordered``; there a batch's results (and their
        journal lines) arrive together when its last rollout ends.
        """
        backend: Any = self.backend
        if isinstance(backend, str):
            backend = joblib.parallel.BACKENDS.get(backend)
        streams = getattr(backend, "supports_return_generator", True)
        return "generator_unordered" if streams else "list"

    def close(self) -> None:
        """Let the pool's workers go."""
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
            self._parallel = None
