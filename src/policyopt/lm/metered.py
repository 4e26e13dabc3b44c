"""A view of a shared LM that keeps its own usage.

Benchmark cells running at once on one model server each get a :class:`MeteredLM`, so every cell
reports its own calls, tokens and cost, task model and optimizer model apart.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from policyopt.lm.base import LM, Completion, LMLike, Messages
from policyopt.types import LMUsage

__all__ = ["MeteredLM"]


class MeteredLM(LM):
    """Forwards every request to ``inner`` (its cache, retries and server) and counts it here.

    ``inner`` is an :class:`LM`, or any text-in, text-out :class:`LMLike` (then settings are not
    passed on and tokens are not known).

    ``defaults`` are request settings (``max_tokens``, ``temperature``, ``stop``...) applied under
    the caller's own keyword arguments, so one server can back LMs with different settings.
    """

    def __init__(self, inner: LMLike, **defaults: Any) -> None:
        # no super().__init__: the model, cache and retries are the inner LM's
        self.inner = inner
        self.model = str(getattr(inner, "model", type(inner).__name__))
        self.kwargs = dict(defaults)
        self.num_retries = int(getattr(inner, "num_retries", 0))
        self.timeout = getattr(inner, "timeout", None)
        self.max_backoff = float(getattr(inner, "max_backoff", 0.0))
        self._cache = None
        self._lock = threading.Lock()
        self._usage = LMUsage()

    def complete(self, prompt: str | Messages, /, **kwargs: Any) -> Completion:
        """Ask the inner LM with this view's defaults; count the answer's usage here."""
        try:
            if isinstance(self.inner, LM):
                completion = self.inner.complete(prompt, **{**self.kwargs, **kwargs})
            else:  # a plain text-in, text-out LM (e.g. a scripted one in tests): no settings
                completion = Completion(text=self.inner(prompt))
        except Exception:
            self._add(LMUsage(errors=1))
            raise
        return self._count(completion)

    async def acomplete(self, prompt: str | Messages, /, **kwargs: Any) -> Completion:
        """:meth:`complete` for coroutines: the inner LM's async call, counted here."""
        try:
            if isinstance(self.inner, LM):
                completion = await self.inner.acomplete(prompt, **{**self.kwargs, **kwargs})
            else:  # a plain callable: on a worker thread, so the event loop goes on
                completion = Completion(text=await asyncio.to_thread(self.inner, prompt))
        except Exception:
            self._add(LMUsage(errors=1))
            raise
        return self._count(completion)

    def _count(self, completion: Completion) -> Completion:
        if completion.cached:
            self._add(LMUsage(cache_hits=1))
        else:
            self._add(
                LMUsage(
                    calls=1,
                    prompt_tokens=completion.prompt_tokens,
                    completion_tokens=completion.completion_tokens,
                    cost_usd=completion.cost_usd,
                )
            )
        return completion

    def __repr__(self) -> str:
        return f"MeteredLM({self.inner!r}, {self.kwargs!r})"
