"""The function that runs one rollout, wherever joblib sends it (thread, process, cluster).

Kept module-level and free of engine state so that any joblib backend can pickle it.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from policyopt.errors import ScoreTypeError
from policyopt.types import Score, is_finite, normalize_score

__all__ = ["Outcome", "execute"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one call of ``evaluate`` produced: a score, or an error (``kind`` says which)."""

    index: int
    kind: str  # "ok" | "error" | "type_error"
    score: Score | None
    error: str | None
    duration_s: float


def _call_with_timeout(
    evaluate: Callable[[Any, Any], object], prompt: Any, example: Any, timeout: float
) -> object:
    """Run ``evaluate`` in a helper thread and give up waiting after ``timeout`` seconds.

    Threads cannot be killed: a timed-out call keeps running in the background and its result is
    discarded. The user's own LM client should carry a timeout too.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = evaluate(prompt, example)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="policyopt-rollout", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"evaluate did not return within the {timeout:g} s rollout timeout")
    if "error" in box:
        raise box["error"]
    return box["value"]


def execute(
    index: int,
    evaluate: Callable[[Any, Any], object],
    prompt: Any,
    example: Any,
    timeout: float | None,
) -> Outcome:
    """Call ``evaluate(prompt, example)`` once and classify what happened."""
    start = time.perf_counter()
    try:
        if timeout is None:
            raw = evaluate(prompt, example)
        else:
            raw = _call_with_timeout(evaluate, prompt, example, timeout)
    except Exception as exc:
        last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
        message = f"{type(exc).__name__}: {exc}{where}"
        return Outcome(index, "error", None, message, time.perf_counter() - start)
    elapsed = time.perf_counter() - start
    try:
        score = normalize_score(raw)
    except ScoreTypeError as exc:
        return Outcome(index, "type_error", None, str(exc), elapsed)
    if not is_finite(score):
        return Outcome(
            index, "error", None, f"evaluate returned a non-finite score {score.score!r}", elapsed
        )
    return Outcome(index, "ok", score, None, elapsed)
