"""The end of a GEPA run: its state snapshot (for resuming) and its result."""

from __future__ import annotations

from typing import TYPE_CHECKING

from policyopt.choice import best_mean, final_candidate
from policyopt.types import LMUsage, OptimizationResult

if TYPE_CHECKING:
    from policyopt.gepa.optimizer import _Run

__all__ = ["finish", "snapshot"]


def snapshot(run: _Run, stop_reason: str | None) -> None:
    """Write the run's state to its run_dir (nothing without one), so a resume starts here."""
    if run.rundir is None:
        return
    run.rundir.write_state(
        {
            "iteration": run.iteration,
            "rollouts_used": run.engine.rollouts_used,
            "best": run.best,
            "stop_reason": stop_reason,
            "candidates": run.pop.snapshot(),
            "counts": run.counts,
            "merges_due": run.merges_due,
            "sampler": run.sampler.state() if hasattr(run.sampler, "state") else None,
            "rng": {
                "parent": run.rng_parent.getstate(),
                "sampler": run.rng_sampler.getstate(),
                "merge": run.rng_merge.getstate(),
            },
        }
    )


def finish(run: _Run, reason: str) -> OptimizationResult:
    """The run's result: the chosen candidate, the population and what the run spent."""
    pop, s = run.pop, run.s
    agg = pop.aggregate()
    best = final_candidate(s.final_choice, pop.val_scores, agg, s.final_z)
    usage = getattr(run.proposer, "usage", None) or LMUsage()
    wall = run.ctx.wall()
    result = OptimizationResult(
        optimizer="gepa",
        best_prompt=pop.shaped(pop.prompts[best]),
        best_score=agg[best],
        best_candidate=best,
        candidates=pop.candidates(),
        n_rollouts=run.engine.rollouts_used,
        max_rollouts=s.max_rollouts,
        lm_usage={"reflection": usage},
        cost_usd=usage.cost_usd,
        seed=s.seed,
        settings=s.model_dump(),
        stop_reason=reason,
        wall_time_s=wall,
        details={
            "pareto_front": pop.front.to_json(),  # type: ignore[dict-item]
            "non_dominated": pop.front.non_dominated(agg),  # type: ignore[dict-item]
            "iterations": run.iteration,
            "final_choice": {  # type: ignore[dict-item]
                "rule": s.final_choice,
                "chosen": best,
                "highest_mean": best_mean(agg),
            },
            "counts": dict(run.counts),  # type: ignore[dict-item]
            "rejections": dict(getattr(run.proposer, "rejections", {})),  # type: ignore[dict-item]
            **run.ctx.fault_details(),  # type: ignore[dict-item]
            "estimate": run.ctx.estimate,  # type: ignore[dict-item]
        },
    )
    snapshot(run, reason)
    return result
