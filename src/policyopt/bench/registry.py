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

from policyopt.bench.cell import BenchOptimizer, CellContext, OptimizerOutcome
from policyopt.errors import ConfigError

__all__ = [
    "OPTIMIZERS",
    "BenchOptimizer",
    "CellContext",
    "OptimizerOutcome",
    "get_optimizer",
    "names",
    "register",
]


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
