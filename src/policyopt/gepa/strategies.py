"""GEPA's strategies as protocols: each setting takes a built-in's name or your own instance.

=====================  ===================================  ==========================
setting                protocol                             built-in names
=====================  ===================================  ==========================
candidate_selection    :class:`CandidateSelector`           pareto, current_best,
                                                            epsilon_greedy
component_selection    :class:`ComponentSelector`           round_robin, all
minibatch_sampler      :class:`BatchSamplerFactory`         epoch
acceptance             :class:`AcceptanceCriterion`         improvement, non_decreasing
merge_pairing          :class:`MergePairing`                common_ancestor
proposer               :class:`ReflectionProposer`          reflection (the LM)
=====================  ===================================  ==========================

A strategy gets its randomness from the ``rng`` GEPA passes (seeded from the run's seed), so a
run with your own strategies is reproducible and resumes exactly: resuming replays the run from
the start, calling your strategy the same way. One whose choices depend on anything else
(time, a service) should set ``resumable = False``; a resumed run then says so in its result
(``details["resume_exact"]``). The run's settings record an instance as
``custom:<module>.<class>`` plus its ``config()`` when it has one.

Example, a selector that always picks the most recent candidate::

    class Newest:
        def select(self, front, aggregate, rng):
            return max(aggregate)

    GEPA(lm=..., max_rollouts=200, candidate_selection=Newest())
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from policyopt.errors import describe
from policyopt.gepa.merge import MergePlan, find_merge
from policyopt.gepa.pareto import ParetoFront
from policyopt.gepa.selection import EpochSampler, best_candidate
from policyopt.plugins import describe_strategy, resumable

__all__ = [
    "AcceptanceCriterion",
    "BatchSampler",
    "BatchSamplerFactory",
    "CandidateSelector",
    "ComponentSelector",
    "MergePairing",
    "ReflectionProposer",
    "describe_strategy",
    "resolve",
    "resumable",
]


@runtime_checkable
class CandidateSelector(Protocol):
    """Chooses the parent of the next reflective mutation."""

    def select(
        self, front: ParetoFront, aggregate: Mapping[int, float], rng: random.Random
    ) -> int: ...


@runtime_checkable
class ComponentSelector(Protocol):
    """Chooses which prompt components a reflection rewrites.

    ``turn`` counts the reflections this candidate has had so far (for round-robin schemes).
    """

    def select(self, turn: int, components: Sequence[str]) -> list[str]: ...


@runtime_checkable
class BatchSampler(Protocol):
    """Hands out training minibatches."""

    def next(self) -> list[str]: ...


#: ``(train ids, minibatch size, rng) -> BatchSampler``
BatchSamplerFactory = Callable[[Sequence[str], int, random.Random], BatchSampler]


@runtime_checkable
class AcceptanceCriterion(Protocol):
    """Decides whether a child beat its parent on the same minibatch (scores in order)."""

    def accept(self, parent: Sequence[float], child: Sequence[float]) -> bool: ...


@runtime_checkable
class MergePairing(Protocol):
    """Finds two lineages to merge, or None (see :func:`policyopt.gepa.merge.find_merge`)."""

    def find(
        self,
        pool: Sequence[int],
        prompts: Sequence[Mapping[str, str]],
        parents: Sequence[Sequence[int]],
        aggregate: Mapping[int, float],
        rng: random.Random,
        tried: set[tuple[int, int, int]],
        existing: set[str],
        key: Callable[[Mapping[str, str]], str],
    ) -> MergePlan | None: ...


@runtime_checkable
class ReflectionProposer(Protocol):
    """Writes a new text for one component from the minibatch records; None gives up.

    ``key`` names the call uniquely within the run (``iteration/slot/component``, plus ``/sN``
    for sample N > 0 when ``proposals_per_reflection`` > 1). A proposer may also take a keyword
    ``sample`` (0 for the first proposal of a reflection), as the built-in one does.
    """

    def propose(
        self, key: str, component: str, current: str, records: Sequence[Mapping[str, str]]
    ) -> str | None: ...


# ---------------------------------------------------------------------- built-ins
class Pareto:
    """Frequency-weighted among the non-dominated candidates of the per-example front."""

    def select(self, front: ParetoFront, aggregate: Mapping[int, float], rng: random.Random) -> int:
        return front.sample(aggregate, rng)


class CurrentBest:
    """Always the candidate with the best mean validation score."""

    def select(self, front: ParetoFront, aggregate: Mapping[int, float], rng: random.Random) -> int:
        return best_candidate(aggregate)


class EpsilonGreedy:
    """A uniform pick with probability ``epsilon``, else the best."""

    def __init__(self, epsilon: float) -> None:
        self.epsilon = epsilon

    def select(self, front: ParetoFront, aggregate: Mapping[int, float], rng: random.Random) -> int:
        if rng.random() < self.epsilon:
            return rng.choice(sorted(aggregate))
        return best_candidate(aggregate)

    def config(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon}


class RoundRobin:
    """One component per reflection, in turn."""

    def select(self, turn: int, components: Sequence[str]) -> list[str]:
        return [components[turn % len(components)]]


class AllComponents:
    """Every component at each reflection."""

    def select(self, turn: int, components: Sequence[str]) -> list[str]:
        return list(components)


class Improvement:
    """The child's minibatch sum must beat the parent's by ``margin`` per example."""

    def __init__(self, margin: float = 0.0) -> None:
        self.margin = margin

    def accept(self, parent: Sequence[float], child: Sequence[float]) -> bool:
        return math.fsum(child) > math.fsum(parent) + self.margin * len(child) + 1e-12

    def config(self) -> dict[str, Any]:
        return {"margin": self.margin}


class NonDecreasing:
    """The child may tie its parent (useful when minibatch scores are coarse)."""

    def accept(self, parent: Sequence[float], child: Sequence[float]) -> bool:
        return math.fsum(child) >= math.fsum(parent) - 1e-12


class CommonAncestor:
    """GEPA's merge pairing: two front lineages with a shared ancestor (seeded order)."""

    def find(
        self,
        pool: Sequence[int],
        prompts: Sequence[Mapping[str, str]],
        parents: Sequence[Sequence[int]],
        aggregate: Mapping[int, float],
        rng: random.Random,
        tried: set[tuple[int, int, int]],
        existing: set[str],
        key: Callable[[Mapping[str, str]], str],
    ) -> MergePlan | None:
        return find_merge(pool, prompts, parents, aggregate, rng, tried, existing, key)


#: setting -> (protocol, built-in name -> maker(settings))
_BUILTINS: dict[str, tuple[type, dict[str, Callable[[Any], Any]]]] = {
    "candidate_selection": (
        CandidateSelector,
        {
            "pareto": lambda s: Pareto(),
            "current_best": lambda s: CurrentBest(),
            "epsilon_greedy": lambda s: EpsilonGreedy(s.epsilon),
        },
    ),
    "component_selection": (
        ComponentSelector,
        {"round_robin": lambda s: RoundRobin(), "all": lambda s: AllComponents()},
    ),
    "minibatch_sampler": (object, {"epoch": lambda s: EpochSampler}),
    "acceptance": (
        AcceptanceCriterion,
        {
            "improvement": lambda s: Improvement(s.acceptance_margin),
            "non_decreasing": lambda s: NonDecreasing(),
        },
    ),
    "merge_pairing": (MergePairing, {"common_ancestor": lambda s: CommonAncestor()}),
    "proposer": (ReflectionProposer, {"reflection": lambda s: None}),  # built by the run
}

#: the built-in names of each strategy setting
NAMES: dict[str, tuple[str, ...]] = {k: tuple(v[1]) for k, v in _BUILTINS.items()}


def check(setting: str, value: Any) -> Any:
    """Validate a strategy setting: a built-in name, or an instance of its protocol."""
    protocol, builtins = _BUILTINS[setting]
    if isinstance(value, str):
        if value not in builtins:
            raise ValueError(
                f"unknown {setting} {value!r}; built-in: {', '.join(builtins)} "
                f"(or pass your own {getattr(protocol, '__name__', 'callable')} instance)"
            )
        return value
    if setting == "minibatch_sampler":
        if not callable(value):
            raise ValueError(
                "must be 'epoch' or a callable (ids, size, rng) -> sampler with next()"
            )
        return value
    if not isinstance(value, protocol):
        raise ValueError(
            f"must be one of {', '.join(builtins)} or an object with the "
            f"{protocol.__name__} methods; got {describe(value)}"
        )
    return value


def resolve(setting: str, value: Any, settings: Any) -> Any:
    """The strategy object for a setting's value (built-ins made from ``settings``)."""
    if isinstance(value, str):
        return _BUILTINS[setting][1][value](settings)
    return value
