"""The per-key Pareto front GEPA keeps over validation scores.

A key is a validation example id, or ``"<id>::<objective>"`` when scores carry objectives. For
every key the front keeps the best score reached and the candidates within ``tolerance`` of it
(ties by tolerance, not float equality). Parent selection samples among the non-dominated
candidates in proportion to how many keys each is best on.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

__all__ = ["ParetoFront"]


class ParetoFront:
    """Best score and best candidates per key; candidates are ints (their pool index)."""

    def __init__(self, tolerance: float = 1e-9) -> None:
        self.tolerance = tolerance
        self._scores: dict[str, dict[int, float]] = {}

    def update(self, candidate: int, scores: Mapping[str, float]) -> None:
        """Record ``candidate``'s score on each key."""
        for key, value in scores.items():
            self._scores.setdefault(key, {})[candidate] = float(value)

    @property
    def keys(self) -> list[str]:
        """Every key seen, in insertion order."""
        return list(self._scores)

    def best(self, key: str) -> float:
        """Best score on ``key``."""
        return max(self._scores[key].values())

    def members(self, key: str) -> set[int]:
        """Candidates within ``tolerance`` of the best score on ``key``."""
        scores = self._scores[key]
        top = max(scores.values())
        return {c for c, s in scores.items() if s >= top - self.tolerance}

    def fronts(self) -> dict[str, set[int]]:
        """``key -> members`` for every key."""
        return {key: self.members(key) for key in self._scores}

    def candidates(self) -> set[int]:
        """Candidates best on at least one key."""
        out: set[int] = set()
        for members in self.fronts().values():
            out |= members
        return out

    def non_dominated(self, aggregate: Mapping[int, float]) -> list[int]:
        """Front candidates left after removing those dominated by set membership.

        ``y`` is dominated when every key whose front holds ``y`` also holds another surviving
        candidate. Lower-``aggregate`` candidates are removed first, one at a time, so of two
        candidates with the same fronts the better one survives. Sorted by index.
        """
        fronts = self.fronts()
        alive = self.candidates()
        changed = True
        while changed:
            changed = False
            for cand in sorted(alive, key=lambda c: (aggregate.get(c, 0.0), -c)):
                holding = [members for members in fronts.values() if cand in members]
                if holding and all(len(members & alive) > 1 for members in holding):
                    alive.discard(cand)
                    changed = True
                    break
        return sorted(alive)

    def frequencies(self, aggregate: Mapping[int, float]) -> dict[int, int]:
        """For each non-dominated candidate, on how many keys it is best."""
        alive = self.non_dominated(aggregate)
        fronts = self.fronts().values()
        return {c: sum(1 for members in fronts if c in members) for c in alive}

    def sample(self, aggregate: Mapping[int, float], rng: random.Random) -> int:
        """Draw a non-dominated candidate with probability proportional to its frequency."""
        freq = self.frequencies(aggregate)
        ordered = sorted(freq)
        return rng.choices(ordered, weights=[freq[c] for c in ordered], k=1)[0]

    def to_json(self) -> dict[str, object]:
        """``{key: {"best": score, "candidates": [...]}}`` for results and snapshots."""
        return {
            key: {"best": self.best(key), "candidates": sorted(self.members(key))}
            for key in self._scores
        }
