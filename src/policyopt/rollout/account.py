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

The two budgets agree unless an earlier process paid for rollouts that will not replay (results
lost to a kill, failures paid again).

Recorded failures are finished work: they replay as recorded, like successes. They are paid again
(``retry``) only when the caller says why (the user asked, or ``evaluate`` changed), and those
journaled before a breach record (a segment stopped on ``evaluate_errors``: they are why it
stopped). Within one process a failure is remembered, not re-run, so a key has several results
only when a later segment paid it again: the last one is what that segment saw, and it replays.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from policyopt.rollout.records import Rollout, failed_rollout
from policyopt.state.journal import Journal
from policyopt.types import ExampleId, Score

__all__ = ["BREACH_RECORD", "RolloutAccount", "RolloutKey"]

#: a rollout's identity: (prompt key, split, example id)
RolloutKey = tuple[str, str, ExampleId]

#: journaled when the error policy stops a run: a resume pays the failures before it again
BREACH_RECORD = {"type": "stop", "reason": "evaluate_errors"}


class RolloutAccount:
    """The counts of one engine; the caller holds the engine's state lock around updates."""

    def __init__(self, max_rollouts: int | None) -> None:
        self.max_rollouts = max_rollouts
        self.paid = 0
        self.resumed = 0
        self.lost = 0  # started by an earlier process, its result never recorded (killed)
        self.journal_failures = 0  # failed rollouts an earlier process recorded
        self.seq = 0  # the last attempt number: it pairs a start record with its result
        self.unreached: set[RolloutKey] = set()  # journaled results this run has not reached
        self.reached = 0  # journaled results this run has reached again (free)
        self.order: dict[RolloutKey, int] = {}  # a journaled result's place in the journal
        self.fresh: list[RolloutKey] = []  # reached since the last replays()
        self.retry: set[RolloutKey] = set()  # recorded failures paid again when asked
        self.unreplayed = 0  # recorded failures that do not replay (len(retry) at load)
        self.replayable = 0  # recorded failures that replay when reached
        self.replayed = 0  # recorded failures reached (answered from the journal)
        self.retried = 0  # recorded failures paid again
        self.retry_why: str | None = None  # why the failures of ``retry`` are paid again

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

    def charge(self, key: RolloutKey) -> int:
        """Pay one rollout of ``key`` about to start; its attempt number."""
        self.paid += 1
        self.seq += 1
        if key in self.retry:
            self.retry.discard(key)
            self.retried += 1
        return self.seq

    def reach(self, key: RolloutKey, rollout: Rollout) -> None:
        """A cached result was read: a journaled one not reached before moves the clock."""
        if key in self.unreached:
            self.unreached.discard(key)
            self.reached += 1
            self.replayed += rollout.failed
            self.fresh.append(key)

    def replays(self) -> list[RolloutKey]:
        """The journaled results reached since the last call, in journal order: the order in
        which the original run's error policy counted them."""
        keys = sorted(self.fresh, key=self.order.__getitem__)
        self.fresh.clear()
        return keys

    def counts_as_cost(self, key: RolloutKey, cache: dict[RolloutKey, Rollout]) -> bool:
        """Whether asking for ``key`` costs budget by the clock (as it did for the original
        run: a journaled result not yet reached counts)."""
        return key not in cache or key in self.unreached

    def load(
        self, journal: Journal, *, failure_score: float, retry: str | None = None
    ) -> dict[RolloutKey, Rollout]:
        """Reload an earlier run's journal: every started rollout counts as paid; the cached
        results (to be reached again) are returned. ``retry`` says why every recorded failure
        is paid again (None: only those before a breach record are)."""
        starts: set[int] = set()
        finished: set[int] = set()
        cache: dict[RolloutKey, Rollout] = {}
        failed: dict[RolloutKey, int] = {}  # key -> place of its (last) failure record
        breach = -1  # place of the last breach record
        for place, record in enumerate(journal.iter_records()):
            kind = record.get("type")
            if kind == "start":
                starts.add(int(record["n"]))
                continue
            if kind == BREACH_RECORD["type"]:
                breach = place if record.get("reason") == BREACH_RECORD["reason"] else breach
                continue
            if kind != "rollout":
                continue
            seq = record.get("n")
            if seq is None:  # written before start records existed
                self.paid += 1
            else:
                finished.add(int(seq))
            key = (record["prompt"], record["split"], record["example"])
            self.order[key] = place
            error = record.get("error")
            if error is not None:
                self.journal_failures += 1
                failed[key] = place
                rollout = failed_rollout(key, error, record.get("duration_s", 0.0), failure_score)
            else:
                failed.pop(key, None)
                duration = record.get("duration_s", 0.0)
                rollout = Rollout(key[0], key[1], key[2], _score(record), None, False, duration)
            cache[key] = dataclasses.replace(rollout, cached=True)
        for key, place in failed.items():
            if retry is not None or place < breach:
                self.retry.add(key)
                del cache[key]
        self.unreplayed, self.replayable = len(self.retry), len(failed) - len(self.retry)
        if self.retry:
            self.retry_why = retry or "a segment stopped on evaluate_errors after they failed"
        self.unreached = set(cache)
        self.paid += len(starts | finished)
        self.resumed = self.paid
        self.lost = len(starts - finished)
        self.seq = max(starts | finished, default=0)
        return cache

    def note(self) -> str | None:
        """One line on what happens to the recorded failures (None: there are none)."""
        parts = []
        if self.unreplayed:
            parts.append(f"{_failures(self.unreplayed)} will be paid again: {self.retry_why}")
        if self.replayable:
            parts.append(
                f"{_failures(self.replayable)} replayed as recorded (pass retry_failures=True "
                "to pay them again)"
            )
        return "; ".join(parts) or None


def _failures(n: int) -> str:
    return f"{n} recorded failure{'s' if n != 1 else ''}"


def _score(record: dict[str, Any]) -> Score:
    """The score of a journaled rollout record."""
    return Score(
        record["score"],
        feedback=record.get("feedback"),
        output=record.get("output"),
        trace=record.get("trace"),
        objectives=record.get("objectives"),
    )
