"""The candidate book: where a candidate is scored on the valset, created and announced.

Every optimizer keeps its candidates here (GEPA keeps only its own view beside them: prompts as
components and the Pareto front, by the same index), so the events a listener sees and the rules
a run stops by are the same for all of them: ``CandidateProposed`` for every candidate, the seed
included, before it is scored (several scored in one batch are all announced first);
``CandidateEvaluated`` once scored; ``NewBest`` when the best mean rises by more than the tie
tolerance (:func:`is_new_best`); a run is solved when its best reaches the perfect score within
the same tolerance (:func:`is_solved`); ties go to the earliest candidate; the candidate a run
returns is chosen by one rule (:meth:`CandidateBook.final_choice`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from policyopt.choice import best_mean, final_candidate
from policyopt.events import CandidateEvaluated, CandidateProposed, NewBest
from policyopt.types import Candidate, ExampleId

if TYPE_CHECKING:
    from policyopt.rollout.records import Rollout
    from policyopt.runtime import RunContext

__all__ = [
    "TIE_TOLERANCE",
    "CandidateBook",
    "NewCandidate",
    "ScoredCandidate",
    "is_new_best",
    "is_solved",
]

#: scores closer than this are equal, for every optimizer without a ``tie_tolerance`` setting
TIE_TOLERANCE = 1e-9


def is_new_best(score: float, best: float, tolerance: float = TIE_TOLERANCE) -> bool:
    """Whether ``score`` beats the best so far (a tie is not a new best)."""
    return score > best + tolerance


def is_solved(score: float, perfect: float, tolerance: float = TIE_TOLERANCE) -> bool:
    """Whether ``score`` reaches the perfect score (within the tie tolerance)."""
    return score >= perfect - tolerance


@dataclass(frozen=True)
class NewCandidate:
    """A prompt to score on the valset and keep: what it descends from and how it was made."""

    prompt: Any
    parents: list[int] = field(default_factory=list)
    origin: str = "seed"


@dataclass(frozen=True)
class ScoredCandidate:
    """A candidate the book kept, with its valset rollouts (in the valset's order), for an
    optimizer that reads more of them than the score (GEPA's objectives)."""

    candidate: Candidate
    rollouts: tuple[Rollout, ...]


class CandidateBook:
    """A run's candidates, each scored on the valset once, announced and ranked the same way."""

    def __init__(self, ctx: RunContext, *, tolerance: float = TIE_TOLERANCE) -> None:
        self.ctx = ctx
        self.tolerance = tolerance
        self.candidates: list[Candidate] = []
        self.best_score = -math.inf

    def __len__(self) -> int:
        return len(self.candidates)

    @property
    def best(self) -> Candidate:
        """The candidate with the best validation mean (the earliest among equals)."""
        return self.candidates[best_mean({c.index: c.val_score for c in self.candidates})]

    def solved(self, perfect: float) -> bool:
        """Whether the best candidate reaches the perfect score."""
        return bool(self.candidates) and is_solved(self.best.val_score, perfect, self.tolerance)

    def final_choice(self, rule: str, z: float) -> dict[str, Any]:
        """Which candidate the run returns by ``rule`` (:func:`policyopt.choice.final_candidate`),
        as the result's ``final_choice`` record: the rule, the chosen index, the highest mean."""
        aggregate = {c.index: c.val_score for c in self.candidates}
        chosen = final_candidate(rule, [c.val_scores for c in self.candidates], aggregate, z)
        return {"rule": rule, "chosen": chosen, "highest_mean": best_mean(aggregate)}

    def add(
        self, prompt: Any, *, parents: list[int], origin: str, label: str = "val"
    ) -> Candidate | None:
        """Announce ``prompt`` as the next candidate, score it on the valset and keep it.

        None (and nothing announced) when the budget cannot pay for the whole valset, or when
        the batch was cut short.
        """
        kept = self.add_all([NewCandidate(prompt, parents, origin)], label=label)
        return kept[0].candidate if kept else None

    def add_all(
        self, new: Sequence[NewCandidate], *, label: str = "val"
    ) -> list[ScoredCandidate] | None:
        """Announce the first of ``new`` that the budget pays for whole, score them on the
        valset in one batch and keep them, in order; those kept (fewer than ``new`` when the
        budget ran short). None (and nothing kept) when the batch was cut short.
        """
        ctx = self.ctx
        requests: list[tuple[Any, ExampleId]] = []
        fits: list[NewCandidate] = []
        for entry in new:
            more = [(entry.prompt, i) for i in ctx.val_ids]
            if not ctx.affordable(requests + more, ctx.val_split):
                break
            ctx.events.emit(
                CandidateProposed(
                    candidate=len(self.candidates) + len(fits),
                    parents=entry.parents,
                    origin=entry.origin,
                    prompt=entry.prompt,
                )
            )
            requests += more
            fits.append(entry)
        if not fits:
            return []
        result = ctx.engine.run(requests, split=ctx.val_split, label=label)
        if not result.complete:
            return None
        done = iter(result.done())
        return [self._keep(entry, [next(done) for _ in ctx.val_ids]) for entry in fits]

    def _keep(self, entry: NewCandidate, runs: list[Rollout]) -> ScoredCandidate:
        """Keep a scored candidate and announce its score (and a new best)."""
        ctx = self.ctx
        candidate = Candidate(
            index=len(self.candidates),
            prompt=entry.prompt,
            parents=entry.parents,
            origin=entry.origin,
            val_scores={i: r.value for i, r in zip(ctx.val_ids, runs, strict=True)},
            found_at_rollout=ctx.engine.rollouts_spent,
        )
        self.candidates.append(candidate)
        ctx.events.emit(
            CandidateEvaluated(
                candidate=candidate.index,
                split="val",
                score=candidate.val_score,
                n_examples=len(candidate.val_scores),
            )
        )
        if is_new_best(candidate.val_score, self.best_score, self.tolerance):
            self.best_score = candidate.val_score
            ctx.events.emit(
                NewBest(
                    candidate=candidate.index,
                    score=candidate.val_score,
                    rollouts_used=ctx.engine.rollouts_spent,
                )
            )
        return ScoredCandidate(candidate, tuple(runs))
