"""The engine's rollout account: what was paid and what the run has reached, one meaning a counter.

Three counts and two budgets, each with one meaning (the engine exposes them under the names
optimizers and events use):

- ``paid`` (``RolloutEngine.rollouts_used``): rollouts started, each journaled before
  ``evaluate`` is called, by this process and by every earlier one (reloaded): the hard count
  that ``max_rollouts`` caps;
- ``resumed`` (``resumed_rollouts``): of ``paid``, those an earlier process started;
- ``clock`` (``rollouts_spent``): the run's rollout clock, ``paid - resumed`` plus the
  journaled results this process has reached again: a resumed run reads the same clock the
  original run read at the same point, so decisions made by it replay exactly;
- ``payable`` (``payable``): rollouts that can still be started, ``max_rollouts - paid``;
- ``plannable`` (``budget_left``): rollouts a step may plan with, by the clock, never more than
  ``payable`` plus the journaled results still to come back free.

The two budgets agree unless an earlier process paid for rollouts that will not replay (failures,
results lost to a kill).
"""

from __future__ import annotations

from typing import Any

from policyopt.rollout.records import Rollout
from policyopt.state.journal import Journal
from policyopt.types import ExampleId, Score

__all__ = ["RolloutAccount", "RolloutKey"]

#: a rollout's identity: (prompt key, split, example id)
RolloutKey = tuple[str, str, ExampleId]


class RolloutAccount:
    """The counts of one engine; the caller holds the engine's state lock around updates."""

    def __init__(self, max_rollouts: int | None) -> None:
        self.max_rollouts = max_rollouts
        self.paid = 0
        self.resumed = 0
        self.lost = 0  # started by an earlier process, its result never recorded (killed)
        self.journal_failures = 0  # failed rollouts an earlier process recorded: paid again
        self.seq = 0  # the last attempt number: it pairs a start record with its result
        self.unreached: set[RolloutKey] = set()  # journaled results this run has not reached
        self.reached = 0  # journaled results this run has reached again (free)

    @property
    def clock(self) -> int:
        """The run's rollout clock (see the module docstring)."""
        return self.paid - self.resumed + self.reached

    @property
    def payable(self) -> int | None:
        """Rollouts that can still be started (None: no budget)."""
        return None if self.max_rollouts is None else self.max_rollouts - self.paid

    @property
    def plannable(self) -> int | None:
        """Rollouts a step may plan with: by the clock, and never more than can be paid."""
        if self.max_rollouts is None:
            return None
        payable = self.max_rollouts - self.paid + len(self.unreached)
        return min(self.max_rollouts - self.clock, payable)

    def charge(self) -> int:
        """Pay one rollout about to start; its attempt number."""
        self.paid += 1
        self.seq += 1
        return self.seq

    def reach(self, key: RolloutKey) -> None:
        """A cached result was read: a journaled one not reached before moves the clock."""
        if key in self.unreached:
            self.unreached.discard(key)
            self.reached += 1

    def counts_as_cost(self, key: RolloutKey, cache: dict[RolloutKey, Rollout]) -> bool:
        """Whether asking for ``key`` costs budget by the clock (as it did for the original
        run: a journaled result not yet reached counts)."""
        return key not in cache or key in self.unreached

    def load(self, journal: Journal) -> dict[RolloutKey, Rollout]:
        """Reload an earlier run's journal: every started rollout counts as paid; the cached
        successes (to be reached again) are returned."""
        starts: set[int] = set()
        finished: set[int] = set()
        cache: dict[RolloutKey, Rollout] = {}
        for record in journal.iter_records():
            kind = record.get("type")
            if kind == "start":
                starts.add(int(record["n"]))
                continue
            if kind != "rollout":
                continue
            seq = record.get("n")
            if seq is None:  # written before start records existed
                self.paid += 1
            else:
                finished.add(int(seq))
            if record.get("error") is not None:
                self.journal_failures += 1
                continue
            key = (record["prompt"], record["split"], record["example"])
            self.unreached.add(key)
            cache[key] = Rollout(
                key[0], key[1], key[2], _score(record), None, True, record.get("duration_s", 0.0)
            )
        self.paid += len(starts | finished)
        self.resumed = self.paid
        self.lost = len(starts - finished)
        self.seq = max(starts | finished, default=0)
        return cache


def _score(record: dict[str, Any]) -> Score:
    """The score of a journaled rollout record."""
    return Score(
        record["score"],
        feedback=record.get("feedback"),
        output=record.get("output"),
        trace=record.get("trace"),
        objectives=record.get("objectives"),
    )
