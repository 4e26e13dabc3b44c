"""The step loop every optimizer runs: check the stop rules, take one step, count what it did,
snapshot the run's state, and at the end build the result.

Before each step the rules are checked in one order, the first that fires ending the run:

1. ``"perfect_score"``: the candidate book's best reaches the perfect score (the book's solved
   rule, :func:`policyopt.book.is_solved`), when the settings say ``stop_at_perfect``;
2. the optimizer's own end, if it has one (``"max_steps"``, a planned trial count);
3. ``"stalled"``: ``stall_limit`` steps in a row that paid no rollout and made nothing new;
4. the run's limits (:class:`~policyopt.stopping.Stopper`): time, cost, optimizer-LM calls and
   tokens, the STOP file, ``patience`` steps without a new best.

The optimizer supplies the step (what to try next, returning a stop reason or None) and its own
part of the snapshot and the result; the rest is here, once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field

from policyopt.types import Candidate, LMUsage, OptimizationResult

if TYPE_CHECKING:
    from policyopt.runtime import RunContext

__all__ = ["STALL_LIMIT", "StepLoop", "perfect_score_field", "stop_at_perfect_field"]

#: steps in a row that neither pay a rollout nor make anything new before a run is "stalled"
STALL_LIMIT = 10


def perfect_score_field() -> Any:
    """The ``perfect_score`` setting of an optimizer's settings model."""
    return Field(None, description="score that counts as solved; None: the top of score_range")


def stop_at_perfect_field() -> Any:
    """The ``stop_at_perfect`` setting of an optimizer's settings model."""
    return Field(True, description="stop once the valset is solved")


class StepLoop:
    """One run's steps and the rules that end them, the same for every optimizer.

    ``usage`` gives the optimizer LM's usage so far (for the cost and LM limits); ``state``
    gives the optimizer's own part of ``state.json``; ``end`` is the optimizer's own end rule;
    ``stall_limit`` None turns the stall rule off.
    """

    def __init__(
        self,
        ctx: RunContext,
        *,
        usage: Callable[[], LMUsage],
        state: Callable[[], Mapping[str, Any]],
        end: Callable[[], str | None] | None = None,
        stall_limit: int | None = STALL_LIMIT,
    ) -> None:
        s = ctx.settings
        self.ctx = ctx
        self.perfect: float | None = s.perfect() if getattr(s, "stop_at_perfect", False) else None
        self.stall_limit = stall_limit
        self._usage = usage
        self._state = state
        self._end = end
        self.steps = 0  # steps started
        self.since_best = 0  # steps in a row without a new best
        self.stalled = 0  # steps in a row that paid no rollout and made nothing new

    def limits(self) -> str | None:
        """The run's limits (time, cost, LM calls and tokens, STOP file, patience), or None."""
        usage = self._usage()
        return self.ctx.stopper.reason(
            cost_usd=usage.cost_usd, steps_without_improvement=self.since_best, lm_usage=usage
        )

    def reason(self) -> str | None:
        """The first stop rule that fires, in the module's order, or None."""
        if self.perfect is not None and self.ctx.book.solved(self.perfect):
            return "perfect_score"
        own = self._end() if self._end is not None else None
        if own:
            return own
        if self.stall_limit is not None and self.stalled >= self.stall_limit:
            return "stalled"
        return self.limits()

    def run(self, step: Callable[[], str | None], *, made: Callable[[], int] = lambda: 0) -> str:
        """Take steps until a rule fires or a step returns a stop reason; that reason.

        A step that pays a rollout or raises ``made()`` (the count of what the optimizer makes:
        scored instructions, candidates) ends a stall; a step that raises the book's best score
        ends a run of steps without a new best. The state is snapshot after every step.
        """
        engine, book = self.ctx.engine, self.ctx.book
        while True:
            reason = self.reason()
            if reason:
                return reason
            self.steps += 1
            spent, count, best = engine.rollouts_spent, made(), book.best_score
            outcome = step()
            self.since_best = 0 if book.best_score > best else self.since_best + 1
            progress = engine.rollouts_spent > spent or made() > count
            self.stalled = 0 if progress else self.stalled + 1
            self.snapshot()
            if outcome:
                return outcome

    def snapshot(self, stop_reason: str | None = None) -> None:
        """Rewrite ``state.json`` (with a run dir): the run's step, spend, best and candidates,
        then the optimizer's own state (its RNGs, counters, history)."""
        ctx = self.ctx
        if ctx.rundir is None:
            return
        book = ctx.book
        ctx.rundir.write_state(
            {
                "step": self.steps,
                "rollouts_used": ctx.engine.rollouts_used,
                "best": book.best.index if book.candidates else None,
                "stop_reason": stop_reason,
                "candidates": [c.model_dump() for c in book.candidates],
                **self._state(),
            }
        )

    def finish(
        self, reason: str, *, best: Candidate, role: str, details: Mapping[str, Any]
    ) -> OptimizationResult:
        """The run's result: ``best`` returned, the book's candidates, the LM's usage under
        ``role``, the optimizer's ``details`` with the estimate and the faults; snapshot last."""
        ctx = self.ctx
        s: Any = ctx.settings
        usage = self._usage()
        result = OptimizationResult(
            optimizer=ctx.optimizer,
            best_prompt=best.prompt,
            best_score=best.val_score,
            best_candidate=best.index,
            candidates=ctx.book.candidates,
            n_rollouts=ctx.engine.rollouts_used,
            max_rollouts=s.max_rollouts,
            lm_usage={role: usage},
            cost_usd=usage.cost_usd,
            seed=s.seed,
            settings=s.model_dump(),
            stop_reason=reason,
            wall_time_s=ctx.wall(),
            details={**details, "estimate": ctx.estimate, **ctx.fault_details()},
        )
        self.snapshot(reason)
        return result
