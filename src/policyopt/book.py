"""The candidate book: where a candidate is scored on the valset, created and announced.

Every optimizer keeps its candidates here (GEPA keeps its Pareto population beside it and uses
the same rules), so the events a listener sees and the rules a run stops by are the same for
all of them: ``CandidateProposed`` for every candidate, the seed included, before it is scored;
``CandidateEvaluated`` once scored; ``NewBest`` when the best mean rises by more than the tie
tolerance (:func:`is_new_best`); a run is solved when its best reaches the perfect score within
the same tolerance (:func:`is_solved`); ties go to the earliest candidate.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from policyopt.choice import best_mean
from policyopt.events import CandidateEvaluated, CandidateProposed, NewBest
from policyopt.types import Candidate

if TYPE_CHECKING:
    from policyopt.runtime import RunContext

__all__ = ["TIE_TOLERANCE", "CandidateBook", "is_new_best", "is_solved"]

#: scores closer than this are equal, for every optimizer without a ``tie_tolerance`` setting
TIE_TOLERANCE = 1e-9


def is_new_best(score: float, best: float, tolerance: float = TIE_TOLERANCE) -> bool:
    """Whether ``score`` beats the best so far (a tie is not a new best)."""
    return score > best + tolerance


def is_solved(score: float, perfect: float, tolerance: float = TIE_TOLERANCE) -> bool:
    """Whether ``score`` reaches the perfect score (within the tie tolerance)."""
    return score >= perfect - tolerance


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

    def add(
        self, prompt: Any, *, parents: list[int], origin: str, label: str = "val"
    ) -> Candidate | None:
        """Announce ``prompt`` as the next candidate, score it on the valset and keep it.

        None (and nothing announced) when the budget cannot pay for the whole valset, or when
        the batch was cut short.
        """
        ctx = self.ctx
        requests = [(prompt, i) for i in ctx.val_ids]
        if not ctx.affordable(requests, ctx.val_split):
            return None
        index = len(self.candidates)
        ctx.events.emit(
            CandidateProposed(candidate=index, parents=parents, origin=origin, prompt=prompt)
        )
        result = ctx.engine.run(requests, split=ctx.val_split, label=label)
        if not result.complete:
            return None
        candidate = Candidate(
            index=index,
            prompt=prompt,
            parents=parents,
            origin=origin,
            val_scores={i: r.value for i, r in zip(ctx.val_ids, result.rollouts, strict=True) if r},
            found_at_rollout=ctx.engine.rollouts_spent,
        )
        self.candidates.append(candidate)
        ctx.events.emit(
            CandidateEvaluated(
                candidate=index,
                split="val",
                score=candidate.val_score,
                n_examples=len(candidate.val_scores),
            )
        )
        if is_new_best(candidate.val_score, self.best_score, self.tolerance):
            self.best_score = candidate.val_score
            ctx.events.emit(
                NewBest(
                    candidate=index,
                    score=candidate.val_score,
                    rollouts_used=ctx.engine.rollouts_spent,
                )
            )
        return candidate
