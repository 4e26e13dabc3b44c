"""Typed events and their consumers.

Optimizers and the rollout engine only *emit* events; a progress display, a JSONL run log and
(later) tracking or a server's event stream only *listen*. A listener is any callable taking an
:class:`Event`. A listener that raises is logged and dropped from nothing else: the run goes on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

__all__ = [
    "REASONS",
    "BatchDone",
    "CandidateEvaluated",
    "CandidateProposed",
    "Event",
    "EventBus",
    "JSONLEventLog",
    "Listener",
    "NewBest",
    "ProposalJudged",
    "RolloutsProgress",
    "RunFinished",
    "RunStarted",
]

logger = logging.getLogger("policyopt")


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of all events; ``kind`` names the type in logs and streams."""

    kind: ClassVar[str] = "event"
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the ``kind`` first."""
        return {"kind": self.kind, **dataclasses.asdict(self)}


@dataclass(frozen=True, kw_only=True)
class RunStarted(Event):
    """An optimizer run begins; ``estimate`` is the optimizer's forecast of its spend."""

    kind: ClassVar[str] = "run_started"
    optimizer: str
    max_rollouts: int | None
    n_train: int
    n_val: int
    settings: dict[str, Any] = field(default_factory=dict)
    estimate: dict[str, Any] = field(default_factory=dict)
    resumed_rollouts: int = 0


@dataclass(frozen=True, kw_only=True)
class BatchDone(Event):
    """The rollout engine finished a batch (emitted by the engine, never by optimizers)."""

    kind: ClassVar[str] = "batch_done"
    label: str
    n_requested: int
    n_run: int
    n_cached: int
    n_failed: int
    n_cut: int
    rollouts_used: int
    max_rollouts: int | None
    duration_s: float
    last_error: str | None = None  # the last failed rollout's error in this batch, if any


@dataclass(frozen=True, kw_only=True)
class RolloutsProgress(Event):
    """Rollouts finished so far inside a running batch (throttled: a few per second at most)."""

    kind: ClassVar[str] = "rollouts_progress"
    label: str
    done: int
    total: int
    rollouts_used: int
    max_rollouts: int | None


@dataclass(frozen=True, kw_only=True)
class CandidateProposed(Event):
    """A new candidate prompt exists (before it is scored)."""

    kind: ClassVar[str] = "candidate_proposed"
    candidate: int
    parents: list[int]
    origin: str
    prompt: str | dict[str, str] | list[dict[str, str]]


@dataclass(frozen=True, kw_only=True)
class CandidateEvaluated(Event):
    """A candidate was scored on a split (``"minibatch"``, ``"val"``, ``"test"`` ...)."""

    kind: ClassVar[str] = "candidate_evaluated"
    candidate: int
    split: str
    score: float
    n_examples: int
    accepted: bool | None = None


#: why the proposal loop rejected an LM answer: the codes of :class:`ProposalJudged` (and of the
#: optimizers' ``details["rejections"]``), each with what it means
REASONS: dict[str, str] = {
    "cut_off": "the answer was cut off at the token limit",
    "unparsable": "the answer has an unclosed ``` fence, so it was probably cut off",
    "empty": "the new text is empty",
    "unchanged": "the new text is the same as the current one",
    "too_long": "the new text (or the whole answer) is over the length limit",
    "copies_example": "the new text copies an example (or fixes one answer for every input)",
    "echoes_prompt": "the new text repeats the proposal request's own words",
    "duplicate": "the new text repeats one proposed or scored before",
}


@dataclass(frozen=True, kw_only=True)
class ProposalJudged(Event):
    """The proposal loop's verdict on one LM answer, journaled with the run so that ``show``
    reads it instead of judging the answer again.

    ``key`` is the answer's journal key (``{proposal}/{attempt}``), ``role`` the LM's record
    type (``proposal`` for GEPA, ``proposer`` for MIPRO, ``meta`` for OPRO). ``accepted``: the
    answer gave ``text``, a usable new text (not yet scored); ``rejected``: ``reason`` is one of
    :data:`REASONS`, ``detail`` the words the model was told on its retry. An accepted answer
    may be rejected later as a ``duplicate`` of a sibling's (a second verdict, same ``key``).
    """

    kind: ClassVar[str] = "proposal_judged"
    key: str
    role: str
    attempt: int
    verdict: str
    reason: str | None = None
    detail: str | None = None
    text: str | None = None

    def record(self) -> dict[str, Any]:
        """The verdict as a journal record (``type`` ``verdict``; no time: a replay equals it)."""
        fields = dataclasses.asdict(self)
        del fields["time"]
        return {"type": "verdict", **fields}


@dataclass(frozen=True, kw_only=True)
class NewBest(Event):
    """The best validation score so far improved."""

    kind: ClassVar[str] = "new_best"
    candidate: int
    score: float
    rollouts_used: int


@dataclass(frozen=True, kw_only=True)
class RunFinished(Event):
    """The run ended; ``stop_reason`` says why."""

    kind: ClassVar[str] = "run_finished"
    best_score: float
    best_candidate: int
    n_rollouts: int
    stop_reason: str
    wall_time_s: float
    best_prompt: Any = None  # the best candidate's prompt (for listeners that keep no history)
    lm_usage: dict[str, dict[str, Any]] = field(default_factory=dict)  # per LM role: LMUsage
    cost_usd: float | None = None


Listener = Callable[[Event], None]


class EventBus:
    """Fan events out to listeners, in order, from any thread; listener errors are logged."""

    def __init__(self, listeners: Iterable[Listener] = ()) -> None:
        self._listeners: list[Listener] = list(listeners)
        self._lock = threading.Lock()

    def subscribe(self, listener: Listener) -> None:
        """Add a listener; it receives every event emitted from now on."""
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        """Remove a listener added before (no error if it is absent)."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def emit(self, event: Event) -> None:
        """Deliver ``event`` to every listener; a failing listener never stops the run."""
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # a display or log bug must not kill an optimization
                logger.exception("event listener %r failed on %s", listener, event.kind)


class JSONLEventLog:
    """Listener that appends every event as one JSON line to ``path`` (flushed per event)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = None
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        line = json.dumps(event.to_dict(), default=repr, ensure_ascii=False)
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate in some text: \u escapes round-trip it
            line = json.dumps(event.to_dict(), default=repr)
        with self._lock:
            if self._file is None:
                self._file = self.path.open("a", encoding="utf-8")
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        """Close the file (reopened on the next event)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
