"""Calls of the reflection LM, memoized in the run journal so a resumed run replays them.

Each call has a position key (``iteration/slot/component/attempt``) and the hash of its prompt.
On replay, a journal record with the same key and prompt hash answers without calling the LM;
a different prompt hash means the run diverged, and the LM is asked again.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from policyopt.gepa.reflection import check_proposal, extract_instruction, render_prompt
from policyopt.state.journal import Journal
from policyopt.types import LMUsage

__all__ = ["Proposer"]

logger = logging.getLogger("policyopt")


class Proposer:
    """Asks the reflection LM for a new text, retrying rejected proposals at no rollout cost."""

    def __init__(
        self,
        lm: Any,
        *,
        template: str,
        max_retries: int,
        max_chars: int,
        journal: Journal | None,
        memo: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        self.lm = lm
        self.template = template
        self.max_retries = max_retries
        self.max_chars = max_chars
        self.journal = journal
        self.memo: dict[str, Mapping[str, Any]] = {r["key"]: r for r in memo}
        self.usage = LMUsage()
        self.rejections: dict[str, int] = {}
        self._lock = threading.Lock()

    def _ask(self, key: str, prompt: str) -> Mapping[str, Any]:
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
                "type": "proposal",
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

    def propose(
        self, key: str, component: str, current: str, records: Sequence[Mapping[str, str]]
    ) -> str | None:
        """A new text for ``component``, or None when every attempt was rejected."""
        reason: str | None = None
        for attempt in range(self.max_retries + 1):
            prompt = render_prompt(self.template, component, current, records, reason)
            record = self._ask(f"{key}/{attempt}", prompt)
            text, balanced = extract_instruction(record["text"])
            reason = check_proposal(
                text,
                current,
                balanced=balanced,
                truncated=record["finish_reason"] == "length",
                max_chars=self.max_chars,
            )
            if reason is None:
                return text
            with self._lock:
                self.rejections[reason] = self.rejections.get(reason, 0) + 1
            logger.debug("proposal %s/%d rejected: %s", key, attempt, reason)
        return None
