"""Faults to throw at an optimizer: broken ``evaluate`` callables, broken LMs, and a kill loop.

Every optimizer must survive all of them: a fault ends in a valid result with a clear
``stop_reason``, or in a clear error, never a hang or a silent wrong answer. The conformance
suite (:meth:`policyopt.testing.conformance.Conformance.check_faults`) applies each one; the
same pieces serve users who want to test their own setup::

    evaluate = faults.Flaky(my_evaluate, rate=0.1)
    lm = faults.surrogate_lm(my_lm)

Evaluates wrap another ``evaluate`` (the keyword task's by default); LMs are ``str -> str``
callables (wrap with :class:`policyopt.lm.CallableLM` or pass directly to an optimizer).
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

__all__ = [
    "AlwaysFails",
    "BreaksAfter",
    "Flaky",
    "Hanging",
    "NaNScores",
    "OutOfRange",
    "RateLimitError",
    "empty_lm",
    "huge_lm",
    "non_str_lm",
    "raising_lm",
    "rate_limited_lm",
    "sigkill_loop",
    "slow_lm",
    "surrogate_lm",
    "unfenced_lm",
]

Evaluate = Callable[[Any, Any], object]
TextLM = Callable[[str], str]


def _example_id(example: Any) -> str:
    return str(example.get("id")) if isinstance(example, dict) else str(example)


class _Wrapper:
    """Counts calls of a wrapped evaluate; subclasses decide when to misbehave."""

    def __init__(self, evaluate: Evaluate) -> None:
        self.evaluate = evaluate
        self.calls = 0
        self.faults = 0
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        """Calls so far (the money spent)."""
        return self.calls

    def _count(self, fault: bool) -> None:
        with self._lock:
            self.calls += 1
            self.faults += fault


class Flaky(_Wrapper):
    """Raises ``RuntimeError`` on a deterministic ``rate`` share of calls (hash of the call)."""

    def __init__(self, evaluate: Evaluate, rate: float = 0.1) -> None:
        super().__init__(evaluate)
        self.rate = rate

    def __call__(self, prompt: Any, example: Any) -> object:
        text = f"{prompt!r}|{_example_id(example)}"
        draw = int(hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:8], 16) / 2**32
        fault = draw < self.rate
        self._count(fault)
        if fault:
            raise RuntimeError("flaky backend: connection reset")
        return self.evaluate(prompt, example)


class AlwaysFails(_Wrapper):
    """Raises on the examples whose id is in ``ids`` (every time), else evaluates."""

    def __init__(self, evaluate: Evaluate, ids: Collection[str]) -> None:
        super().__init__(evaluate)
        self.ids = set(ids)

    def __call__(self, prompt: Any, example: Any) -> object:
        fault = _example_id(example) in self.ids
        self._count(fault)
        if fault:
            raise ValueError(f"example {_example_id(example)} always breaks evaluate")
        return self.evaluate(prompt, example)


class NaNScores(_Wrapper):
    """Returns NaN on the examples whose id is in ``ids`` (``None``: on every example)."""

    def __init__(self, evaluate: Evaluate, ids: Collection[str] | None = None) -> None:
        super().__init__(evaluate)
        self.ids = None if ids is None else set(ids)

    def __call__(self, prompt: Any, example: Any) -> object:
        fault = self.ids is None or _example_id(example) in self.ids
        self._count(fault)
        return math.nan if fault else self.evaluate(prompt, example)


class OutOfRange(_Wrapper):
    """Returns ``value`` (default 1.7, above the [0, 1] scores a run expects) on every call."""

    def __init__(self, evaluate: Evaluate, value: float = 1.7) -> None:
        super().__init__(evaluate)
        self.value = value

    def __call__(self, prompt: Any, example: Any) -> object:
        self._count(True)
        return self.value


class Hanging(_Wrapper):
    """Blocks (until :meth:`release`) on the examples whose id is in ``ids``; ``None``: all."""

    def __init__(self, evaluate: Evaluate, ids: Collection[str] | None = None) -> None:
        super().__init__(evaluate)
        self.ids = None if ids is None else set(ids)
        self.gate = threading.Event()
        self.live = 0  # calls blocked right now

    def __call__(self, prompt: Any, example: Any) -> object:
        fault = self.ids is None or _example_id(example) in self.ids
        self._count(fault)
        if fault:
            with self._lock:
                self.live += 1
            try:
                self.gate.wait()
            finally:
                with self._lock:
                    self.live -= 1
        return self.evaluate(prompt, example)

    def release(self) -> None:
        """Let every blocked call return."""
        self.gate.set()


class RateLimitError(Exception):
    """What a provider SDK raises on HTTP 429 (a plain exception, not policyopt's)."""

    status_code = 429


def empty_lm() -> TextLM:
    """Answers an empty string."""
    return lambda prompt: ""


def unfenced_lm() -> TextLM:
    """Answers prose without the fenced block the optimizers ask for."""
    return lambda prompt: "I think the instruction should be clearer, but I will not say how."


def huge_lm(base: TextLM | None = None, size: int = 1_000_000) -> TextLM:
    """Answers ``size`` characters of chatter (then ``base``'s answer, if given)."""
    return lambda prompt: "blah " * (size // 5) + (base(prompt) if base else "")


def surrogate_lm(base: TextLM) -> TextLM:
    """``base``'s answer with lone surrogates in it (not encodable as UTF-8)."""
    return lambda prompt: base(prompt).replace("\n```", " \ud800\udfff\ud800\n```", 1) + "\udc00"


def non_str_lm() -> Callable[[str], Any]:
    """Answers a number instead of text."""
    return lambda prompt: 42


def raising_lm(exc: BaseException | None = None) -> TextLM:
    """Raises on every call (``RuntimeError`` by default)."""

    def answer(prompt: str) -> str:
        raise exc if exc is not None else RuntimeError("LM backend exploded")

    return answer


def rate_limited_lm() -> TextLM:
    """Raises :class:`RateLimitError` on every call, as an exhausted provider quota does."""
    return raising_lm(RateLimitError("429 Too Many Requests: quota exceeded"))


def slow_lm(base: TextLM, seconds: float) -> TextLM:
    """``base``, after sleeping ``seconds`` per call."""

    def answer(prompt: str) -> str:
        time.sleep(seconds)
        return base(prompt)

    return answer


class BreaksAfter(_Wrapper):
    """Works for the first ``n`` calls, then raises on every call (a backend that went down)."""

    def __init__(self, evaluate: Evaluate, n: int) -> None:
        super().__init__(evaluate)
        self.n = n

    def __call__(self, prompt: Any, example: Any) -> object:
        with self._lock:
            fault = self.calls >= self.n
        self._count(fault)
        if fault:
            raise ConnectionError("backend is down: connection refused")
        return self.evaluate(prompt, example)


def sigkill_loop(
    command: list[str],
    *,
    kill_when: Sequence[Callable[[], bool]],
    timeout_s: float = 300.0,
    env: dict[str, str] | None = None,
) -> tuple[int, int]:
    """Run ``command`` once per condition, SIGKILL it as soon as the condition holds, then let
    a last run finish. Each start resumes where the last was killed (use a run_dir).

    Returns ``(exit code of the last run, kills that landed)``; a run that ends before its
    condition holds is just done.
    """
    import signal
    import subprocess

    deadline = time.monotonic() + timeout_s
    kills = 0
    for condition in kill_when:
        proc = subprocess.Popen(command, env=env)
        while proc.poll() is None and not condition():
            if time.monotonic() > deadline:
                proc.kill()
                raise TimeoutError(f"{command!r} did not finish within {timeout_s:g} s")
            time.sleep(0.005)
        if proc.poll() is not None:
            return proc.returncode, kills
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        kills += 1
    proc = subprocess.Popen(command, env=env)
    return proc.wait(timeout=max(1.0, deadline - time.monotonic())), kills
