"""LM calls memoized in the run journal, so a resumed run replays them instead of paying again.

Each call has a position key chosen by the optimizer (e.g. ``iteration/slot/component/attempt``)
and the hash of its prompt. On replay, a journal record with the same key and prompt hash
answers without calling the LM; a different prompt hash means the run diverged, and the LM is
asked again. Usage is counted from the records, so it is the same in a fresh and a resumed run.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from policyopt.state.journal import Journal
from policyopt.types import LMUsage

__all__ = ["JournaledLM"]


class JournaledLM:
    """Wraps an LM (``complete()`` or a plain callable); answers are journaled and replayed."""

    def __init__(
        self,
        lm: Any,
        *,
        journal: Journal | None,
        memo: Sequence[Mapping[str, Any]] = (),
        kind: str = "proposal",
    ) -> None:
        self.lm = lm
        self.journal = journal
        self.kind = kind
        self.memo: dict[str, Mapping[str, Any]] = {r["key"]: r for r in memo}
        self.usage = LMUsage()
        self._lock = threading.Lock()

    def ask(self, key: str, prompt: str) -> Mapping[str, Any]:
        """The answer record (``text``, ``finish_reason``, tokens, cost) for ``prompt``."""
        digest = hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]
        record = self.memo.get(key)
        if record is None or record.get("prompt_hash") != digest:
            complete = getattr(self.lm, "complete", None)
            if complete is not None:
                answer = complete(prompt)
                text, finish = answer.text, answer.finish_reason
                tokens = (answer.prompt_tokens, answer.completion_tokens)
                cost = answer.cost_usd
            else:
                text, finish, cost = self.lm(prompt), None, None
                tokens = (len(prompt) // 4, len(text) // 4)
            record = {
                "type": self.kind,
                "key": key,
                "prompt_hash": digest,
                "text": text,
                "finish_reason": finish,
                "prompt_tokens": tokens[0],
                "completion_tokens": tokens[1],
                "cost_usd": cost,
            }
            if self.journal is not None:
                self.journal.append(record)
        with self._lock:
            self.usage = self.usage + LMUsage(
                calls=1,
                prompt_tokens=record["prompt_tokens"],
                completion_tokens=record["completion_tokens"],
                cost_usd=record["cost_usd"],
            )
        return record
