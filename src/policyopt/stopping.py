"""Stop conditions shared by the optimizers: time, LM cost, LM calls and tokens, a stop file,
patience.

The rollout budget is enforced by the rollout engine itself; a perfect score and stalls are
rules of the kit's step loop (:mod:`policyopt.steps`, which checks these limits last), Ctrl-C is
the run context's. Each check returns the reason to stop, or None.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from policyopt.types import LMUsage

__all__ = ["Stopper"]


@dataclass
class Stopper:
    """Checks the limits that end a run early; ``reason()`` says which one fired."""

    max_time_s: float | None = None
    max_cost_usd: float | None = None
    max_lm_calls: int | None = None
    max_lm_tokens: int | None = None
    stop_file: Path | None = None
    patience: int | None = None
    started: float = field(default_factory=time.monotonic)

    def urgent(self) -> str | None:
        """The stops worth checking mid-batch: ``"stop_file"``, ``"time_limit"`` or None."""
        if self.stop_file is not None and self.stop_file.exists():
            return "stop_file"
        if self.max_time_s is not None and time.monotonic() - self.started >= self.max_time_s:
            return "time_limit"
        return None

    def reason(
        self,
        *,
        cost_usd: float | None,
        steps_without_improvement: int,
        lm_usage: LMUsage | None = None,
    ) -> str | None:
        """``"time_limit"``, ``"cost_limit"``, ``"lm_call_limit"``, ``"lm_token_limit"``,
        ``"stop_file"``, ``"no_improvement"`` or None.

        ``lm_usage`` is the optimizer LM's (reflection, proposal, meta) usage so far; the call
        and token limits are checked here, between steps, so a step already under way finishes
        (a run can pass the limit by the calls of one step)."""
        urgent = self.urgent()
        if urgent is not None:
            return urgent
        if self.max_cost_usd is not None and (cost_usd or 0.0) >= self.max_cost_usd:
            return "cost_limit"
        if lm_usage is not None:
            if self.max_lm_calls is not None and lm_usage.calls >= self.max_lm_calls:
                return "lm_call_limit"
            tokens = lm_usage.prompt_tokens + lm_usage.completion_tokens
            if self.max_lm_tokens is not None and tokens >= self.max_lm_tokens:
                return "lm_token_limit"
        if self.patience is not None and steps_without_improvement >= self.patience:
            return "no_improvement"
        return None
