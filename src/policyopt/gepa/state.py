"""GEPA's population: its own view of the run's candidates (prompts as components, component
pointers, the Pareto front). The candidates themselves, their lineage and validation scores are
the kit's candidate book's, by the same index."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from policyopt.gepa.pareto import ParetoFront
from policyopt.prompts import PromptShape
from policyopt.types import ExampleId, PromptValue, prompt_key

if TYPE_CHECKING:
    from policyopt.book import CandidateBook, ScoredCandidate

__all__ = ["Population"]


@dataclass
class Population:
    """What GEPA keeps of every candidate in ``book``, by its index: its prompt as components
    (name -> text, rebuilt in the seed's shape by ``shaped``), the next component to rewrite,
    and its per-example scores on the Pareto front."""

    book: CandidateBook
    components: list[str]
    shape: PromptShape
    tolerance: float = 1e-6
    prompts: list[dict[str, str]] = field(default_factory=list)
    pointers: list[int] = field(default_factory=list)
    keys: dict[str, int] = field(default_factory=dict)
    front: ParetoFront = field(init=False)

    def __post_init__(self) -> None:
        self.front = ParetoFront(self.tolerance)

    @classmethod
    def of(cls, book: CandidateBook, seed: object, tolerance: float) -> Population:
        """An empty population for prompts shaped like ``seed`` (the seed joins once scored)."""
        shape = PromptShape.of(seed)
        return cls(book, list(shape.components(seed)), shape, tolerance)

    def shaped(self, prompt: Mapping[str, str]) -> PromptValue:
        """The prompt in the seed's shape (what evaluate() receives)."""
        return self.shape.shaped(prompt)

    def key(self, prompt: Mapping[str, str]) -> str:
        """Content key of a prompt, as the rollout engine computes it."""
        return prompt_key(self.shaped(prompt))

    @property
    def parents(self) -> list[list[int]]:
        """Every candidate's parents (the book's lineage)."""
        return [c.parents for c in self.book.candidates]

    @property
    def val_scores(self) -> list[dict[ExampleId, float]]:
        """Every candidate's per-example validation scores (the book's)."""
        return [c.val_scores for c in self.book.candidates]

    def aggregate(self) -> dict[int, float]:
        """Mean validation score of every candidate (the book's)."""
        return {c.index: c.val_score for c in self.book.candidates}

    def add(self, prompt: dict[str, str], scored: ScoredCandidate, val_ids: Sequence[str]) -> None:
        """Keep the components of a candidate the book just scored, and put its scores (and
        per-example objectives, keyed ``"<id>::<name>"``) on the front. Its component pointer
        continues from its parents' furthest (0 for the seed)."""
        index = scored.candidate.index
        if index != len(self.prompts):
            raise ValueError(f"candidate {index} joins a population of {len(self.prompts)}")
        self.prompts.append(prompt)
        self.pointers.append(max((self.pointers[p] for p in scored.candidate.parents), default=0))
        self.keys[self.key(prompt)] = index
        keyed: dict[str, float] = dict(scored.candidate.val_scores)
        for example_id, run in zip(val_ids, scored.rollouts, strict=True):
            for name, value in (run.score.objectives or {}).items():
                keyed[f"{example_id}::{name}"] = value
        self.front.update(index, keyed)
