"""What one benchmark cell hands an optimizer and gets back, and what an optimizer must offer.

The types shared by the registry (:mod:`policyopt.bench.registry`), policyopt's own entries
(:mod:`policyopt.bench.ours`), the peers' adapters and the runner. Their own module so that the
registry can build an entry of :mod:`policyopt.bench.ours` without the two importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from policyopt.lm.base import LM
from policyopt.tasks.base import Task
from policyopt.types import Program, Score

__all__ = ["BenchOptimizer", "CellContext", "OptimizerOutcome"]


@dataclass(frozen=True)
class CellContext:
    """Everything one cell's optimizer may use. All model calls go through ``task_lm`` and
    ``reflection_lm`` (so the harness can count them); rollouts are metric calls on train/val."""

    task: Task
    task_lm: LM
    reflection_lm: LM
    budget: int
    seed: int
    n_jobs: int
    run_dir: Path
    small_model: bool = True  # the embedded SmolLM2: use the settings tuned for tiny models
    settings: dict[str, Any] = field(default_factory=dict)  # per-optimizer overrides
    listeners: tuple[Callable[[Any], None], ...] = ()  # event listeners (e.g. MLflow tracking)

    def program(self) -> Program:
        """The task's program on the cell's task LM, seeded with the task's seed prompt."""
        return self.task.program(self.task_lm)


@dataclass
class OptimizerOutcome:
    """What an optimizer found and what it spent.

    ``curve`` is the best validation score known after each amount of rollouts spent, as
    ``(rollouts, score)`` pairs in rollout order (empty when the optimizer does not say).
    ``evaluate`` scores one test example with the optimized program when it is more than a prompt
    for the task's own program (e.g. a DSPy program with demos); ``None`` means the harness runs
    ``best_prompt`` through the task program.
    """

    best_prompt: str
    rollouts: int
    best_val_score: float | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)
    evaluate: Callable[[dict[str, Any]], Score] | None = None
    details: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class BenchOptimizer(Protocol):
    """One optimizer the harness can run: a name, whether it can run here, and ``run``."""

    name: str

    def unavailable(self) -> str | None:
        """``None`` when it can run here, else why not (e.g. a package is not installed)."""
        ...

    def run(self, ctx: CellContext) -> OptimizerOutcome:
        """Search a prompt for ``ctx.task`` within ``ctx.budget`` rollouts."""
        ...
