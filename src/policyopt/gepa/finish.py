"""GEPA's own part of a run's snapshot and result; the kit's step loop
(:class:`~policyopt.steps.StepLoop`) writes the rest (step, spend, best, candidates)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from policyopt.gepa.optimizer import _Run
    from policyopt.types import OptimizationResult

__all__ = ["finish", "state"]


def state(run: _Run) -> dict[str, Any]:
    """GEPA's part of ``state.json``: its counts, the merges due, the sampler and the RNGs."""
    return {
        "counts": run.counts,
        "merges_due": run.merges_due,
        "sampler": run.sampler.state() if hasattr(run.sampler, "state") else None,
        "rng": {
            "parent": run.rng_parent.getstate(),
            "sampler": run.rng_sampler.getstate(),
            "merge": run.rng_merge.getstate(),
        },
    }


def finish(run: _Run, reason: str) -> OptimizationResult:
    """The run's result: the candidate the final choice picks, with the Pareto front."""
    pop, s, book = run.pop, run.s, run.ctx.book
    choice = book.final_choice(s.final_choice, s.final_z)
    return run.loop.finish(
        reason,
        best=book.candidates[choice["chosen"]],
        role="reflection",
        details={
            "pareto_front": pop.front.to_json(),
            "non_dominated": pop.front.non_dominated(pop.aggregate()),
            "iterations": run.iteration,
            "final_choice": choice,
            "counts": dict(run.counts),
            "rejections": dict(getattr(run.proposer, "rejections", {})),
            "reasks_skipped": dict(getattr(run.proposer, "reasks_skipped", {})),
        },
    )
