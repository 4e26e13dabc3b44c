"""ScriptedLM: a deterministic stand-in for an LM in unit tests.

It answers from a script: a list of answers consumed in order, a function of the prompt, or a
list of ``(substring, answer)`` rules (first match wins). It records every prompt it was asked,
counts usage like :class:`policyopt.LM`, and can be told to fail.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from policyopt.lm.base import Completion, Messages, as_messages
from policyopt.types import LMUsage

__all__ = ["ScriptedLM"]

Script = Sequence[str] | Callable[[str], str] | Sequence[tuple[str, str]]


class ScriptedLM:
    """A fake LM that answers from a script and records what it was asked."""

    def __init__(
        self,
        script: Script,
        *,
        default: str | None = None,
        finish_reason: str = "stop",
        fail_with: BaseException | None = None,
        max_tokens: int | None = None,
    ) -> None:
        self.script = script
        self.max_tokens = max_tokens  # the answer limit a proposal prompt is told (not enforced)
        self.default = default
        self.finish_reason = finish_reason
        self.fail_with = fail_with
        self.prompts: list[str] = []
        self.model = "scripted"
        self._position = 0
        self._lock = threading.Lock()
        self._usage = LMUsage()

    def _answer(self, text: str) -> str:
        script = self.script
        if callable(script):
            return script(text)
        if script and isinstance(script[0], tuple):
            for rule in script:
                needle, reply = rule  # type: ignore[misc,str-unpack]
                if needle in text:
                    return str(reply)
            if self.default is not None:
                return self.default
            raise LookupError(f"ScriptedLM has no rule matching the prompt: {text[:200]!r}")
        if self._position < len(script):
            item = script[self._position]
            self._position += 1
            return str(item)
        if self.default is not None:
            return self.default
        raise LookupError(f"ScriptedLM ran out of answers after {len(script)} calls")

    def complete(self, prompt: str | Messages, /, **kwargs: Any) -> Completion:
        """Answer like :meth:`policyopt.LM.complete` does."""
        text = "\n\n".join(m["content"] for m in as_messages(prompt))
        with self._lock:
            self.prompts.append(text)
            if self.fail_with is not None:
                self._usage = self._usage + LMUsage(errors=1)
                raise self.fail_with
            answer = self._answer(text)
            usage = LMUsage(
                calls=1, prompt_tokens=len(text) // 4, completion_tokens=len(answer) // 4
            )
            self._usage = self._usage + usage
        return Completion(
            answer, self.finish_reason, usage.prompt_tokens, usage.completion_tokens, 0.0
        )

    def __call__(self, prompt: str | Messages, /, **kwargs: Any) -> str:
        return self.complete(prompt, **kwargs).text

    @property
    def usage(self) -> LMUsage:
        """Usage so far, as an LM reports it."""
        with self._lock:
            return self._usage

    @property
    def calls(self) -> int:
        """How many times it was asked."""
        return len(self.prompts)

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (e.g. sent to Dask workers): everything but the lock."""
        with self._lock:
            return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
