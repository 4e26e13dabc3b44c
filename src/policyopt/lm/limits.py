"""Client-side rate limits: stay under a provider's requests and tokens per minute.

A :class:`RateLimit` is one budget shared by everything that holds it: pass the same object to
several :class:`~policyopt.LM` instances (task LM, reflection LM, several optimizers in one
process) and their calls together stay under it, from threads and coroutines alike. It is built
on ``pyrate-limiter``'s sliding-window log (in memory, thread-safe); the limits of one
process, not of several processes or machines.

A request is counted when it leaves (after the LM's concurrency slot, right before the HTTP
call), every retry included. Its tokens are counted as providers count them against a
tokens-per-minute limit: the prompt's tokens (litellm's tokenizer for the model) plus its
``max_tokens``; without ``max_tokens`` only the prompt counts, so set it when a TPM limit
matters. The window here is ``margin_s`` longer than ``per``, for the time between our count
and the provider's (network, scheduling). A 429 that still comes back is retried as before
(``retry-after``).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Mapping
from typing import Any

from policyopt.errors import ConfigError, describe

__all__ = ["RateLimit", "request_tokens"]


def _positive_int(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"The {name!r} parameter must be an int >= 1 or None; got {describe(value)}."
        )
    return value


class RateLimit:
    """At most ``requests`` calls and ``tokens`` tokens per ``per`` seconds (sliding window).

    ``RateLimit(requests=500, tokens=200_000)`` is a provider's 500 RPM / 200k TPM;
    ``LM(model, rpm=..., tpm=...)`` builds one for a single LM, ``LM(model, rate_limit=limit)``
    shares one.
    """

    def __init__(
        self,
        *,
        requests: int | None = None,
        tokens: int | None = None,
        per: float = 60.0,
        margin_s: float = 0.25,
    ) -> None:
        from pyrate_limiter import InMemoryBucket, Limiter, Rate

        self.requests = _positive_int(requests, "requests")
        self.tokens = _positive_int(tokens, "tokens")
        if self.requests is None and self.tokens is None:
            raise ConfigError("A RateLimit needs requests= or tokens= (per 'per' seconds).")
        if isinstance(per, bool) or not isinstance(per, (int, float)) or not per > 0:
            raise ConfigError(f"The 'per' parameter must be seconds > 0; got {describe(per)}.")
        if isinstance(margin_s, bool) or not isinstance(margin_s, (int, float)) or margin_s < 0:
            raise ConfigError(f"The 'margin_s' parameter must be >= 0; got {describe(margin_s)}.")
        self.per = float(per)
        self.margin_s = float(margin_s)
        # our window is margin_s longer than the provider's: a request is counted here a little
        # before the provider counts it, and that delay varies
        window = max(1, round((self.per + self.margin_s) * 1000))  # milliseconds
        self._poll_s = min(0.05, max(0.005, self.per / 200))

        def limiter(limit: int | None) -> Any:
            if limit is None:
                return None
            return Limiter(InMemoryBucket([Rate(limit, window)]))

        self._requests = limiter(self.requests)
        self._tokens = limiter(self.tokens)
        self._lock = threading.Lock()
        self.waits = 0  # acquires that had to wait (diagnostics)

    def _check(self, tokens: int) -> int:
        if self.tokens is not None and tokens > self.tokens:
            raise ConfigError(
                f"One request counts {tokens} tokens (prompt + max_tokens), more than the "
                f"rate limit's tokens={self.tokens} per {self.per:g} s allow at all: lower "
                "max_tokens or shorten the prompt."
            )
        return max(1, tokens)

    def _parts(self, tokens: int) -> list[tuple[Any, str, int]]:
        # tokens first: when requests bind (the common case) the request is counted right
        # before it leaves; when both bind at once, the token count may be early by the wait
        weight = self._check(tokens)
        parts = [(self._tokens, "tokens", weight), (self._requests, "requests", 1)]
        return [(limiter, name, w) for limiter, name, w in parts if limiter is not None]

    # Waits poll the limiter without blocking, rather than use its blocking acquire: that one
    # stamps an item with the time it planned to wake, and a loaded machine wakes later, so the
    # log would say a request left earlier than it did (measured: 429s at the configured rate).
    def acquire(self, tokens: int = 0) -> None:
        """Block this thread until one request of ``tokens`` tokens fits in the limits."""
        for limiter, name, weight in self._parts(tokens):
            if not limiter.try_acquire(name, weight, blocking=False):
                self._waited()
                while not limiter.try_acquire(name, weight, blocking=False):
                    time.sleep(self._poll_s)

    async def acquire_async(self, tokens: int = 0) -> None:
        """Wait, without blocking the event loop, until one request of ``tokens`` fits."""
        for limiter, name, weight in self._parts(tokens):
            if not limiter.try_acquire(name, weight, blocking=False):
                self._waited()
                while not limiter.try_acquire(name, weight, blocking=False):
                    await asyncio.sleep(self._poll_s)

    def _waited(self) -> None:
        with self._lock:
            self.waits += 1

    def __repr__(self) -> str:
        parts = [f"requests={self.requests}"] if self.requests else []
        parts += [f"tokens={self.tokens}"] if self.tokens else []
        return f"RateLimit({', '.join(parts)}, per={self.per:g})"


def request_tokens(request: Mapping[str, Any]) -> int:
    """Tokens one chat request counts against a TPM limit: prompt tokens + ``max_tokens``."""
    from policyopt.lm._import import _litellm

    litellm = _litellm()
    try:
        prompt = int(litellm.token_counter(model=request["model"], messages=request["messages"]))
    except Exception:  # an unknown tokenizer: about 4 characters a token
        text = "".join(str(m.get("content", "")) for m in request["messages"])
        prompt = math.ceil(len(text) / 4)
    limit = request.get("max_tokens") or request.get("max_completion_tokens") or 0
    return prompt + int(limit)
