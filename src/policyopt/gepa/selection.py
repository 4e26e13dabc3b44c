"""Choices GEPA makes each iteration: which parent, which component, which minibatch."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from policyopt.choice import best_mean as best_candidate
from policyopt.gepa.pareto import ParetoFront

__all__ = ["EpochSampler", "best_candidate", "select_parent"]


def select_parent(
    strategy: str,
    front: ParetoFront,
    aggregate: Mapping[int, float],
    rng: random.Random,
    epsilon: float,
) -> int:
    """``"pareto"``: frequency-weighted among non-dominated; ``"current_best"``; or
    ``"epsilon_greedy"``: a uniform pick with probability ``epsilon``, else the best."""
    if strategy == "pareto":
        return front.sample(aggregate, rng)
    if strategy == "current_best":
        return best_candidate(aggregate)
    if strategy == "epsilon_greedy":
        if rng.random() < epsilon:
            return rng.choice(sorted(aggregate))
        return best_candidate(aggregate)
    raise ValueError(f"unknown parent selection strategy {strategy!r}")


class EpochSampler:
    """Minibatches of training ids: each epoch is a fresh seeded shuffle of all ids.

    When the number of ids is not a multiple of the batch size the epoch is padded with the ids
    drawn least so far, so every id is seen about equally often. Batches are counted by draws,
    not by iterations, so skipped iterations waste nothing.
    """

    def __init__(self, ids: Sequence[str], size: int, rng: random.Random) -> None:
        self.ids = list(ids)
        self.size = min(size, len(self.ids))
        self.rng = rng
        self.epoch = -1
        self.order: list[str] = []
        self.position = 0
        self.counts: Counter[str] = Counter()

    def _new_epoch(self) -> None:
        order = list(self.ids)
        self.rng.shuffle(order)
        remainder = len(order) % self.size
        if remainder:
            # pad the last batch with the least-drawn ids that are not already in it
            tail = set(order[-remainder:])
            rank = {ident: n for n, ident in enumerate(self.ids)}
            pad = sorted(
                (i for i in self.ids if i not in tail), key=lambda i: (self.counts[i], rank[i])
            )
            order += pad[: self.size - remainder]
        self.order = order
        self.position = 0
        self.epoch += 1

    def next(self) -> list[str]:
        """The next minibatch (distinct ids)."""
        if self.position + self.size > len(self.order):
            self._new_epoch()
        batch = self.order[self.position : self.position + self.size]
        self.position += self.size
        self.counts.update(batch)
        return batch

    def state(self) -> dict[str, Any]:
        """JSON-ready state for snapshots."""
        return {"epoch": self.epoch, "position": self.position, "order": self.order}
