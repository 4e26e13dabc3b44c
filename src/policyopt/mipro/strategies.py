"""MIPRO's strategies as protocols: each setting takes a built-in's name or your own object.

======================  ====================================  =============================
setting                 protocol                              built-in names
======================  ====================================  =============================
sampler                 an Optuna ``BaseSampler`` (or a       tpe, random
                        factory ``(seed, n_startup) ->``
                        sampler)
instruction_proposer    :class:`InstructionSource`            grounded, advice (the proposer
                                                              LM; advice: from feedback)
demo_bootstrapper       :class:`DemoSetBuilder`               bootstrap, none
======================  ====================================  =============================

Any Optuna sampler works: ``sampler=optuna.samplers.GPSampler(seed=0)`` (needs its extras), or a
factory so the run's seed reaches it: ``sampler=lambda seed, n: optuna.samplers.QMCSampler(
seed=seed)``. A resumed run replays every trial into a new study, so a seeded sampler resumes
exactly. See :mod:`policyopt.plugins` for how custom objects are recorded.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from policyopt.errors import describe
from policyopt.mipro.demos import Demo, build_demo_sets
from policyopt.plugins import describe_strategy, resumable

__all__ = [
    "NAMES",
    "DemoSetBuilder",
    "InstructionSource",
    "check",
    "describe_strategy",
    "make_sampler",
    "resumable",
]


@runtime_checkable
class InstructionSource(Protocol):
    """Proposes ``n`` instructions for a component, the seed text first."""

    def propose(
        self,
        component: str,
        seed_text: str,
        n: int,
        demo_sets: Sequence[Sequence[Demo]],
        seed_score: float | None = None,
    ) -> list[str]: ...


@runtime_checkable
class DemoSetBuilder(Protocol):
    """Builds up to ``n_sets`` demo sets (the first should be empty: the zero-shot choice)."""

    def build(
        self,
        n_sets: int,
        bootstrapped: Sequence[Demo],
        labeled: Sequence[Demo],
        *,
        max_bootstrapped: int,
        max_labeled: int,
        rng: random.Random,
    ) -> list[list[Demo]]: ...


class Bootstrap:
    """MIPRO's demo sets: empty, labeled-only, then bootstrapped sets topped up with labels."""

    def build(
        self,
        n_sets: int,
        bootstrapped: Sequence[Demo],
        labeled: Sequence[Demo],
        *,
        max_bootstrapped: int,
        max_labeled: int,
        rng: random.Random,
    ) -> list[list[Demo]]:
        return build_demo_sets(
            n_sets,
            bootstrapped,
            labeled,
            max_bootstrapped=max_bootstrapped,
            max_labeled=max_labeled,
            rng=rng,
        )


class NoDemos:
    """Instructions only: one empty demo set (the search is over instructions)."""

    def build(
        self,
        n_sets: int,
        bootstrapped: Sequence[Demo],
        labeled: Sequence[Demo],
        *,
        max_bootstrapped: int,
        max_labeled: int,
        rng: random.Random,
    ) -> list[list[Demo]]:
        return [[]]


def _tpe(seed: int, n_startup_trials: int) -> Any:
    import optuna

    return optuna.samplers.TPESampler(
        seed=seed, multivariate=True, constant_liar=True, n_startup_trials=n_startup_trials
    )


def _random(seed: int, n_startup_trials: int) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


_SAMPLERS: dict[str, Callable[[int, int], Any]] = {"tpe": _tpe, "random": _random}
_BUILDERS: dict[str, Callable[[], DemoSetBuilder]] = {"bootstrap": Bootstrap, "none": NoDemos}

#: the built-in names of each strategy setting
NAMES: dict[str, tuple[str, ...]] = {
    "sampler": tuple(_SAMPLERS),
    "instruction_proposer": ("grounded", "advice"),
    "demo_bootstrapper": tuple(_BUILDERS),
}


def check(setting: str, value: Any) -> Any:
    """Validate a strategy setting: a built-in name, or an object that fits the protocol."""
    if isinstance(value, str):
        if value not in NAMES[setting]:
            raise ValueError(
                f"unknown {setting} {value!r}; built-in: {', '.join(NAMES[setting])} "
                "(or pass your own object)"
            )
        return value
    if setting == "sampler":
        if callable(value) or hasattr(value, "sample_relative"):
            return value
        raise ValueError(
            f"must be tpe, random, an Optuna sampler or a factory; got {describe(value)}"
        )
    protocol = InstructionSource if setting == "instruction_proposer" else DemoSetBuilder
    if not isinstance(value, protocol):
        raise ValueError(
            f"must be one of {', '.join(NAMES[setting])} or an object with the "
            f"{protocol.__name__} methods; got {describe(value)}"
        )
    return value


def make_sampler(value: Any, seed: int, n_startup_trials: int) -> Any:
    """The Optuna sampler for the ``sampler`` setting."""
    if isinstance(value, str):
        return _SAMPLERS[value](seed, n_startup_trials)
    if hasattr(value, "sample_relative"):  # already a sampler
        return value
    return value(seed, n_startup_trials)


def demo_builder(value: Any) -> DemoSetBuilder:
    """The demo-set builder for the ``demo_bootstrapper`` setting."""
    return _BUILDERS[value]() if isinstance(value, str) else value
