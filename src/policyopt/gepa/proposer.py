"""GEPA's proposer: reflection LM calls (journaled, see :mod:`policyopt.state.memo`) with
rejection and retry of unusable proposals, including (``reject_copies``) proposals that copy an
example from the records into the prompt or fix one answer of the data's label set (``outputs``)
as the answer for every input (:mod:`policyopt.guards`). Call keys are
``iteration/slot/component/attempt``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence

from policyopt.gepa.reflection import check_proposal, extract_instruction, render_prompt
from policyopt.guards import COPIES_EXAMPLE, find_copy, find_fixed_answer
from policyopt.state.memo import JournaledLM
from policyopt.types import LMUsage

__all__ = ["Proposer"]

logger = logging.getLogger("policyopt")


class Proposer:
    """Asks the reflection LM (the run's :class:`JournaledLM`) for a new text, retrying rejected
    proposals at no rollout cost."""

    def __init__(
        self,
        lm: JournaledLM,
        *,
        template: str,
        max_retries: int,
        max_chars: int,
        reject_copies: bool = False,
        outputs: Sequence[str] = (),
    ) -> None:
        self.lm = lm
        self.template = template
        self.max_retries = max_retries
        self.max_chars = max_chars
        self.reject_copies = reject_copies
        self.outputs = tuple(outputs)  # the data's label set (empty: free-form answers)
        self.rejections: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def usage(self) -> LMUsage:
        """Reflection LM usage (counted from journal records: equal in a resumed run)."""
        return self.lm.usage

    def propose(
        self,
        key: str,
        component: str,
        current: str,
        records: Sequence[Mapping[str, str]],
        *,
        sample: int = 0,
    ) -> str | None:
        """A new text for ``component``, or None when every attempt was rejected or failed.

        ``sample`` > 0 draws another proposal from the same reflection prompt (another seed).
        """
        reason: str | None = None
        for attempt in range(self.max_retries + 1):
            prompt = render_prompt(
                self.template, component, current, records, reason, outputs=self.outputs
            )
            record = self.lm.ask(f"{key}/{attempt}", prompt, sample=sample)
            if record is None:  # the LM failed past its retries: skip this proposal
                return None
            text, balanced = extract_instruction(record["text"])
            reason = "answer_too_long" if record.get("capped") else None
            reason = reason or check_proposal(
                text,
                current,
                balanced=balanced,
                truncated=record["finish_reason"] == "length",
                max_chars=self.max_chars,
            )
            counted = reason
            if reason is None and self.reject_copies:
                copied = find_copy(text, current, records)
                fixed = None if copied else find_fixed_answer(text, current, self.outputs)
                if copied is not None:
                    counted = COPIES_EXAMPLE
                    reason = (
                        f"it copies the example text {copied!r} into the instruction; state the "
                        "general rule and quote no example"
                    )
                elif fixed is not None:
                    counted = COPIES_EXAMPLE
                    reason = (
                        f"it gives {fixed!r} as the answer to every input, but the right answer "
                        f"depends on the input (one of {', '.join(self.outputs)})"
                    )
            if reason is None:
                return text
            with self._lock:
                key = counted or reason
                self.rejections[key] = self.rejections.get(key, 0) + 1
            logger.debug("proposal %s/%d rejected: %s", key, attempt, reason)
        return None
