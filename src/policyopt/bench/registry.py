"""Optimizers by name: what the harness hands an optimizer for one cell, and what it gets back.

Every optimizer, policyopt's own and the peers' (the ``gepa`` library, DSPy's GEPA and MIPROv2),
is a :class:`BenchOptimizer`: given a :class:`CellContext` (task, task LM, reflection LM, rollout
budget, seed), it searches a prompt and returns an :class:`OptimizerOutcome`. The harness scores
the seed and the optimized prompt on the held-out test split itself, with the same task program
for everyone, and reads calls and tokens off the cell's own LM views.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from policyopt.errors import ConfigError
from policyopt.lm.base import LM
from policyopt.tasks.base import Task
from policyopt.types import Program, Score

__all__ = [
    "OPTIMIZERS",
    "BenchOptimizer",
    "CellContext",
    "OptimizerOutcome",
    "get_optimizer",
    "names",
    "register",
]


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


#: the peers: name -> "module:factory" (imported on first use, so their packages stay optional);
#: policyopt's own optimizers come from :mod:`policyopt.registry` (see :func:`names`)
OPTIMIZERS: dict[str, str] = {
    "gepa-lib": "policyopt.bench.peers.gepa_lib:GEPALibrary",
    "dspy-gepa": "policyopt.bench.peers.dspy_gepa:DSPyGEPA",
    "dspy-mipro": "policyopt.bench.peers.dspy_mipro:DSPyMIPROv2",
}


def register(name: str, target: str | Callable[[], BenchOptimizer]) -> None:
    """Add an optimizer under ``name``: a ``"module:factory"`` path or a factory."""
    if isinstance(target, str) and ":" not in target:
        raise ConfigError(f"Register {name!r} as 'module:factory', not {target!r}.")
    _FACTORIES[name] = target


_FACTORIES: dict[str, str | Callable[[], BenchOptimizer]] = dict(OPTIMIZERS)


def names() -> list[str]:
    """Every optimizer the harness can run: policyopt's registry first, then the peers."""
    from policyopt.registry import optimizer_names

    return [*optimizer_names(), *(n for n in _FACTORIES if n not in optimizer_names())]


def get_optimizer(name: str) -> BenchOptimizer:
    """The optimizer registered as ``name``; a clear error for an unknown name."""
    from policyopt.registry import optimizer_names

    if name in optimizer_names() and name not in _FACTORIES:
        from policyopt.bench.ours import Registered

        return Registered(name)
    if name not in _FACTORIES:
        raise ConfigError(
            f"Unknown optimizer {name!r}; registered optimizers: {', '.join(names())}."
        )
    target = _FACTORIES[name]
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
    optimizer = target()
    if not isinstance(optimizer, BenchOptimizer):
        raise ConfigError(f"{name!r} does not make a BenchOptimizer (name, unavailable, run).")
    return optimizer
