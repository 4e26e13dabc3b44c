"""policyopt's own optimizers as benchmark entries: every name in :mod:`policyopt.registry`.

Set up as ``policyopt demo`` sets them up, from the optimizer's spec: its small-model preset on
the embedded tiny model and its budget fit (MIPRO: 4 candidates, as many minibatch trials as its
written estimate fits). Each cell's run directory holds the optimizer's journal, so an
interrupted cell resumes without paying finished rollouts again.
"""

from __future__ import annotations

import json

from policyopt.anything import ARTIFACT_LM
from policyopt.bench.cell import CellContext, OptimizerOutcome
from policyopt.lm.metered import MeteredLM
from policyopt.registry import get_spec
from policyopt.types import OptimizationResult

__all__ = ["PolicyoptGEPA", "PolicyoptMIPRO", "Registered", "curve_of"]


def curve_of(result: OptimizationResult) -> list[tuple[int, float]]:
    """Best validation score known after each rollout count, from the result's candidates."""
    points: list[tuple[int, float]] = []
    best = float("-inf")
    for candidate in sorted(result.candidates, key=lambda c: (c.found_at_rollout, c.index)):
        if not candidate.val_scores:
            continue
        if candidate.val_score > best:
            best = candidate.val_score
            points.append((candidate.found_at_rollout, best))
    return points


def _outcome(result: OptimizationResult) -> OptimizerOutcome:
    prompt = result.best_prompt
    return OptimizerOutcome(
        # a dict of components (a DSPy-program task) as JSON text, which its program takes
        best_prompt=prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False),
        rollouts=result.n_rollouts,
        best_val_score=result.best_score,
        curve=curve_of(result),
        details={
            "stop_reason": result.stop_reason,
            "candidates": len(result.candidates),
            "settings": result.settings,
        },
    )


class Registered:
    """A policyopt optimizer from :mod:`policyopt.registry`, as a harness entry.

    The cell's settings go through the optimizer's spec: its small-model preset (on the embedded
    model), the cell's overrides, then its budget fit. The optimizer's LM gets the spec's
    small-model overrides through a metered view, so the cell still counts every call.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.spec = get_spec(name)

    def unavailable(self) -> str | None:
        """Always available: it is part of policyopt."""
        return None

    def run(self, ctx: CellContext) -> OptimizerOutcome:
        """Search within the cell's budget, journaled in the cell's run dir (a cut cell resumes)."""
        spec = self.spec
        # a code task's candidate is a whole text: the spec's artifact defaults, not the tiny
        # model's one-sentence instruction preset, and an LM answer long enough for code
        artifact = ctx.task.kind == "code"
        settings = spec.plan(
            {**spec.artifact_settings, **ctx.settings} if artifact else ctx.settings,
            budget=ctx.budget,
            n_train=len(ctx.task.train),
            n_val=len(ctx.task.val),
            small_model=ctx.small_model and not artifact,
        )
        lm = ctx.reflection_lm
        if artifact:
            lm = MeteredLM(ctx.reflection_lm, **ARTIFACT_LM)
        elif ctx.small_model and spec.small_model_lm:
            lm = MeteredLM(ctx.reflection_lm, **spec.small_model_lm)
        optimizer = spec.build(
            lm=lm,
            max_rollouts=ctx.budget,
            n_jobs=ctx.n_jobs,
            seed=ctx.seed,
            run_dir=str(ctx.run_dir / spec.name),
            progress=False,
            listeners=ctx.listeners,
            **settings,
        )
        return _outcome(optimizer.optimize(ctx.program(), ctx.task.train, ctx.task.val))


def PolicyoptGEPA() -> Registered:
    """policyopt's GEPA."""
    return Registered("gepa")


def PolicyoptMIPRO() -> Registered:
    """policyopt's MIPRO."""
    return Registered("mipro")
