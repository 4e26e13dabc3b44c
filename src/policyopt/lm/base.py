"""LM: one callable over litellm (any provider, any OpenAI-compatible server).

Retries with backoff on rate limits, timeouts and server errors (our own loop, so retries are not
layered three deep), an opt-in disk cache keyed by the full request (errors never cached), and
thread-safe usage accounting. litellm is imported on first use: it is slow to import.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from policyopt.errors import ConfigError, LMError, describe
from policyopt.lm.cache import ResponseCache, default_cache_dir
from policyopt.types import LMUsage

__all__ = ["LM", "CallableLM", "Completion", "LMLike", "Messages", "resolve_lm"]

logger = logging.getLogger("policyopt")

Messages = Sequence[Mapping[str, str]]

#: Request keys that never enter the cache key: where a request goes is not what it asks.
_UNKEYED = frozenset(
    {"api_key", "api_base", "base_url", "timeout", "num_retries", "max_retries", "client"}
)


@dataclass(frozen=True, slots=True)
class Completion:
    """One LM answer with what it cost."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0
    cached: bool = False

    @property
    def truncated(self) -> bool:
        """True when the model stopped because it hit ``max_tokens``."""
        return self.finish_reason == "length"


@runtime_checkable
class LMLike(Protocol):
    """What optimizers need of an LM: text in, text out, and usage so far."""

    def __call__(self, prompt: str | Messages, /) -> str: ...

    @property
    def usage(self) -> LMUsage: ...


def _litellm() -> Any:
    """Import litellm with its network look-ups off (the bundled price list is used)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    return litellm


def _retryable(litellm: Any) -> tuple[type[BaseException], ...]:
    return (
        litellm.RateLimitError,
        litellm.Timeout,
        litellm.APIConnectionError,
        litellm.InternalServerError,
        litellm.ServiceUnavailableError,
        litellm.BadGatewayError,
    )


def _retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait (``retry-after`` header), if any."""
    # litellm keeps the provider's headers in litellm_response_headers; .response may be bare.
    for headers in (
        getattr(exc, "litellm_response_headers", None),
        getattr(getattr(exc, "response", None), "headers", None),
        getattr(exc, "headers", None),
    ):
        if not headers:
            continue
        value = headers.get("retry-after")
        if value is None:
            continue
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    return None


def as_messages(prompt: str | Messages) -> list[dict[str, str]]:
    """A text becomes one user message; a message list is checked and copied."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, Sequence) and all(
        isinstance(m, Mapping) and "role" in m and "content" in m for m in prompt
    ):
        return [{str(k): str(v) for k, v in m.items()} for m in prompt]  # type: ignore[union-attr]
    raise ConfigError(
        "An LM takes a str or a list of {'role': ..., 'content': ...} messages; got "
        f"{describe(prompt)} instead."
    )


class LM:
    """A text-in, text-out callable over litellm: ``lm("question") -> "answer"``.

    ``model`` is any litellm model string (``"openai/gpt-4o-mini"``, ``"ollama/llama3"``, or
    ``"openai/<name>"`` with ``api_base=`` for any OpenAI-compatible server). Other keyword
    arguments (``temperature``, ``max_tokens``, ``api_base``, ...) go to ``litellm.completion``.
    ``cache=True`` (or a directory) stores answers on disk keyed by the full request.
    """

    def __init__(
        self,
        model: str,
        *,
        cache: bool | str | Path = False,
        num_retries: int = 4,
        timeout: float | None = 120.0,
        max_backoff: float = 30.0,
        **litellm_kwargs: Any,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(
                f"The 'model' parameter of LM must be a litellm model string such as "
                f"'openai/gpt-4o-mini'; got {describe(model)} instead."
            )
        if isinstance(num_retries, bool) or not isinstance(num_retries, int) or num_retries < 0:
            raise ConfigError(f"'num_retries' must be an int >= 0; got {describe(num_retries)}.")
        self.model = model
        self.num_retries = num_retries
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.kwargs: dict[str, Any] = dict(litellm_kwargs)
        if cache is True:
            self._cache: ResponseCache | None = ResponseCache(default_cache_dir())
        elif cache is False or cache is None:
            self._cache = None
        else:
            self._cache = ResponseCache(Path(cache))
        self._lock = threading.Lock()
        self._usage = LMUsage()

    # ------------------------------------------------------------------ public
    def __call__(self, prompt: str | Messages, /, **kwargs: Any) -> str:
        """Ask the model; returns the answer text."""
        return self.complete(prompt, **kwargs).text

    def complete(self, prompt: str | Messages, /, **kwargs: Any) -> Completion:
        """Ask the model; returns the answer with its finish reason, tokens and cost."""
        request = {"model": self.model, "messages": as_messages(prompt), **self.kwargs, **kwargs}
        key = self._cache_key(request) if self._cache is not None else None
        if key is not None and self._cache is not None:
            hit = self._cache.get(key)
            if hit is not None:
                completion = Completion(**hit, cached=True)
                self._add(LMUsage(cache_hits=1))
                return completion
        completion = self._request(request)
        if key is not None and self._cache is not None:
            self._cache.set(
                key,
                {
                    "text": completion.text,
                    "finish_reason": completion.finish_reason,
                    "prompt_tokens": completion.prompt_tokens,
                    "completion_tokens": completion.completion_tokens,
                    "cost_usd": completion.cost_usd,
                },
            )
        return completion

    @property
    def usage(self) -> LMUsage:
        """Calls, cache hits, errors, tokens and cost so far (a snapshot)."""
        with self._lock:
            return self._usage

    def reset_usage(self) -> LMUsage:
        """Return the usage so far and start counting from zero."""
        with self._lock:
            usage, self._usage = self._usage, LMUsage()
            return usage

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r})"

    # ------------------------------------------------------------------ internals
    def _add(self, usage: LMUsage) -> None:
        with self._lock:
            self._usage = self._usage + usage

    def _cache_key(self, request: Mapping[str, Any]) -> str:
        keyed = {k: v for k, v in request.items() if k not in _UNKEYED}
        text = json.dumps(keyed, sort_keys=True, default=repr, ensure_ascii=False)
        return hashlib.sha256(("policyopt-lm-v1\n" + text).encode("utf-8")).hexdigest()

    def _send(self, litellm: Any, request: dict[str, Any]) -> Any:
        """One HTTP request through litellm (no retries of its own); overridable in tests."""
        return litellm.completion(**request, num_retries=0, max_retries=0, timeout=self.timeout)

    def _cost(self, litellm: Any, response: Any) -> float | None:
        try:
            return float(litellm.completion_cost(completion_response=response))
        except Exception:  # unknown price: report None, never guess
            return None

    def _request(self, request: dict[str, Any]) -> Completion:
        litellm = _litellm()
        retryable = _retryable(litellm)
        attempt = 0
        while True:
            try:
                response = self._send(litellm, request)
                break
            except retryable as exc:
                if attempt >= self.num_retries:
                    self._add(LMUsage(errors=1))
                    raise LMError(
                        f"{self.model}: {type(exc).__name__} after {attempt + 1} attempts: {exc}"
                    ) from exc
                wait = _retry_after(exc)
                if wait is None:
                    wait = random.uniform(0, min(self.max_backoff, 0.5 * 2**attempt))
                wait = min(wait, self.max_backoff)
                logger.info(
                    "%s: %s, retry %d in %.2fs", self.model, type(exc).__name__, attempt + 1, wait
                )
                time.sleep(wait)
                attempt += 1
            except Exception as exc:
                self._add(LMUsage(errors=1))
                raise LMError(f"{self.model}: {type(exc).__name__}: {exc}") from exc
        choice = response.choices[0]
        text = choice.message.content or ""
        usage = getattr(response, "usage", None)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        cost = self._cost(litellm, response)
        self._add(
            LMUsage(
                calls=1,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cost_usd=cost,
            )
        )
        return Completion(
            text, getattr(choice, "finish_reason", None), prompt_tokens, completion_tokens, cost
        )


class CallableLM:
    """Wrap any ``Callable[[str], str]`` so it counts like an :class:`LM` (tokens ~ chars/4)."""

    def __init__(self, fn: Callable[[str], str], *, name: str | None = None) -> None:
        self.fn = fn
        self.model = name or getattr(fn, "__qualname__", type(fn).__name__)
        self._lock = threading.Lock()
        self._usage = LMUsage(cost_usd=None)

    def __call__(self, prompt: str | Messages, /) -> str:
        text = prompt if isinstance(prompt, str) else "\n\n".join(m["content"] for m in prompt)
        try:
            answer = self.fn(text)
        except Exception:
            with self._lock:
                self._usage = self._usage + LMUsage(errors=1, cost_usd=None)
            raise
        if not isinstance(answer, str):
            raise ConfigError(
                f"The LM callable {self.model!r} must return a str; got {describe(answer)}."
            )
        with self._lock:
            self._usage = self._usage + LMUsage(
                calls=1,
                prompt_tokens=len(text) // 4,
                completion_tokens=len(answer) // 4,
                cost_usd=None,
            )
        return answer

    @property
    def usage(self) -> LMUsage:
        with self._lock:
            return self._usage

    def __repr__(self) -> str:
        return f"CallableLM({self.model!r})"


def resolve_lm(value: object, *, name: str = "lm") -> LM | CallableLM | LMLike:
    """Accept a model string, an :class:`LM` (or anything LM-like) or a plain callable."""
    if isinstance(value, str):
        return LM(value)
    if isinstance(value, (LM, CallableLM, LMLike)):
        return value
    if callable(value):
        return CallableLM(value)  # type: ignore[arg-type]
    raise ConfigError(
        f"The {name!r} parameter must be a litellm model string, a policyopt.LM or a callable "
        f"str -> str; got {describe(value)} instead."
    )
