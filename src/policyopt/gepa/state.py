"""GEPA's population: candidates, lineage, validation scores and the Pareto front."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from policyopt.gepa.pareto import ParetoFront
from policyopt.prompts import PromptShape
from policyopt.types import Candidate, PromptValue, prompt_key

__all__ = ["Population"]


@dataclass
class Population:
    """Every candidate GEPA kept, indexed by its position; prompts are stored as components
    (name -> text) and rebuilt in the seed's shape (str, dict or chat messages) by ``shape``."""

    components: list[str]
    shape: PromptShape
    tolerance: float = 1e-6
    prompts: list[dict[str, str]] = field(default_factory=list)
    parents: list[list[int]] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)
    found_at: list[int] = field(default_factory=list)
    pointers: list[int] = field(default_factory=list)
    val_scores: list[dict[str, float]] = field(default_factory=list)
    keys: dict[str, int] = field(default_factory=dict)
    front: ParetoFront = field(init=False)

    def __post_init__(self) -> None:
        self.front = ParetoFront(self.tolerance)

    @classmethod
    def from_seed(cls, seed: object, tolerance: float) -> Population:
        """A population holding only the seed (not yet scored)."""
        shape = PromptShape.of(seed)
        prompt = shape.components(seed)
        pop = cls(components=list(prompt), shape=shape, tolerance=tolerance)
        pop.add(prompt, [], "seed", 0, 0)
        return pop

    def shaped(self, prompt: Mapping[str, str]) -> PromptValue:
        """The prompt in the seed's shape (what evaluate() receives)."""
        return self.shape.shaped(prompt)

    def key(self, prompt: Mapping[str, str]) -> str:
        """Content key of a prompt, as the rollout engine computes it."""
        return prompt_key(self.shaped(prompt))

    def add(
        self, prompt: dict[str, str], parents: list[int], origin: str, found_at: int, pointer: int
    ) -> int:
        """Append a candidate (unscored) and return its index."""
        index = len(self.prompts)
        self.prompts.append(prompt)
        self.parents.append(parents)
        self.origins.append(origin)
        self.found_at.append(found_at)
        self.pointers.append(pointer)
        self.val_scores.append({})
        self.keys[self.key(prompt)] = index
        return index

    def score(self, index: int, scores: Mapping[str, float], objectives: Mapping[str, Any]) -> None:
        """Record validation scores (and per-example objectives) and update the front."""
        self.val_scores[index] = dict(scores)
        keyed = dict(scores)
        for example_id, values in objectives.items():
            for name, value in (values or {}).items():
                keyed[f"{example_id}::{name}"] = value
        self.front.update(index, keyed)

    def aggregate(self) -> dict[int, float]:
        """Mean validation score of every scored candidate."""
        return {i: math.fsum(s.values()) / len(s) for i, s in enumerate(self.val_scores) if s}

    def candidates(self) -> list[Candidate]:
        """The public view of every scored candidate."""
        return [
            Candidate(
                index=i,
                prompt=self.shaped(self.prompts[i]),
                parents=self.parents[i],
                origin=self.origins[i],
                val_scores=self.val_scores[i],
                found_at_rollout=self.found_at[i],
            )
            for i in range(len(self.prompts))
            if self.val_scores[i]
        ]

    def snapshot(self) -> list[dict[str, Any]]:
        """JSON-ready rows for ``state.json``."""
        return [c.model_dump() for c in self.candidates()]
