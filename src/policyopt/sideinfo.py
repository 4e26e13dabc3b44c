"""Side information from inside the user's code: ``policyopt.log(...)`` during a rollout.

A call to :func:`log` while ``evaluate`` runs is captured for that rollout only and appended to
the feedback of its :class:`~policyopt.Score` (after any feedback ``evaluate`` returned), so a
reflection LM sees, e.g., the failing assertions of a test run without ``evaluate`` threading a
list through its helpers. The capture is context-local (:mod:`contextvars`): rollouts on
parallel threads, concurrent asyncio tasks and a rollout nested inside another each collect
their own messages. A thread the user starts inside ``evaluate`` does not inherit the capture
unless it runs in a copy of the context (``contextvars.copy_context().run``). Outside a rollout,
:func:`log` writes to the ``policyopt`` logger at debug level and is otherwise a no-op.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from policyopt.errors import ScoreTypeError
from policyopt.types import Score, normalize_score

__all__ = ["Captured", "captured", "log"]

logger = logging.getLogger("policyopt")

_MESSAGES: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "policyopt_side_info", default=None
)


def log(*parts: object, sep: str = " ") -> None:
    """Attach a message to the current rollout's feedback (``print``-like: parts joined by
    ``sep``); outside a rollout it goes to the ``policyopt`` logger at debug level."""
    message = sep.join(str(part) for part in parts)
    messages = _MESSAGES.get()
    if messages is None:
        logger.debug("policyopt.log outside a rollout: %s", message)
        return
    messages.append(message)


def attach(raw: object, messages: list[str]) -> object:
    """``raw`` (what ``evaluate`` returned) with ``messages`` appended to its feedback; ``raw``
    unchanged when nothing was logged or it is not a score (the engine reports that)."""
    if not messages:
        return raw
    try:
        score = normalize_score(raw)
    except ScoreTypeError:
        return raw
    logged = "\n".join(messages)
    feedback = logged if not score.feedback else f"{score.feedback}\n{logged}"
    return Score(
        score.score,
        feedback=feedback,
        output=score.output,
        trace=score.trace,
        objectives=score.objectives,
    )


class Captured:
    """``evaluate`` with :func:`log` captured per call; picklable, so it ships to process and
    Dask workers like the callable it wraps."""

    def __init__(self, evaluate: Callable[..., object]) -> None:
        self.evaluate = evaluate

    def __call__(self, prompt: Any, example: Any) -> object:
        messages: list[str] = []
        token = _MESSAGES.set(messages)
        try:
            raw = self.evaluate(prompt, example)
        finally:
            _MESSAGES.reset(token)
        if inspect.isawaitable(raw):  # a sync wrapper of an async evaluate: capture its run too
            return _finish(raw, messages)
        return attach(raw, messages)

    def __repr__(self) -> str:
        return f"Captured({self.evaluate!r})"


class CapturedAsync(Captured):
    """The same for an ``async def evaluate``: the capture lives in the rollout's own task."""

    async def __call__(self, prompt: Any, example: Any) -> object:  # type: ignore[override]
        messages: list[str] = []
        token = _MESSAGES.set(messages)
        try:
            raw = self.evaluate(prompt, example)
            if inspect.isawaitable(raw):
                raw = await raw
        finally:
            _MESSAGES.reset(token)
        return attach(raw, messages)


async def _finish(awaitable: Awaitable[object], messages: list[str]) -> object:
    token = _MESSAGES.set(messages)
    try:
        raw = await awaitable
    finally:
        _MESSAGES.reset(token)
    return attach(raw, messages)


def captured(evaluate: Callable[..., object], *, is_async: bool) -> Captured:
    """``evaluate`` wrapped so that :func:`log` calls during each call reach its score's
    feedback (``is_async``: it is an ``async def`` callable, and the wrapper is one too)."""
    if isinstance(evaluate, Captured):
        return evaluate
    return CapturedAsync(evaluate) if is_async else Captured(evaluate)
