"""The rollout engine: every (prompt x example) evaluation of every optimizer goes through here.

It answers from its cache when it can, charges a hard budget, runs the rest in parallel through
joblib (threads by default; any registered joblib backend), turns exceptions into recorded
failures, journals each finished rollout before returning it, and emits one ``BatchDone`` event
per batch. Optimizers decide *what* to evaluate; the engine decides nothing else.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import joblib

from policyopt.errors import (
    ConfigError,
    DatasetError,
    EvaluationError,
    ScoreTypeError,
    StopRequested,
    describe,
)
from policyopt.events import BatchDone, EventBus, RolloutsProgress
from policyopt.rollout.account import BREACH_RECORD, RolloutAccount, RolloutKey
from policyopt.rollout.aio import AsyncSlots, is_async_callable
from policyopt.rollout.dask_backend import DaskRunner, is_dask
from policyopt.rollout.policy import ErrorPolicy
from policyopt.rollout.records import (
    BatchResult,
    Rollout,
    check_backend,
    check_score_range,
    check_settings,
    check_shippable,
    failed_rollout,
    out_of_range,
    runs_in_process,
    settle,
    to_record,
)
from policyopt.rollout.worker import Outcome, Pool, Slots, execute
from policyopt.sideinfo import captured
from policyopt.state.journal import Journal
from policyopt.types import ExampleId, example_ids, prompt_key

__all__ = ["DEFAULT_TIMEOUT_S", "BatchResult", "Rollout", "RolloutEngine", "check_backend"]

logger = logging.getLogger("policyopt")

#: seconds a rollout may take before it is recorded as failed (None turns the limit off)
DEFAULT_TIMEOUT_S = 600.0
_PROGRESS_EVERY_S = 0.25  # at most this often a RolloutsProgress event inside a batch


_Done = tuple[int, Outcome, "Rollout | None"]
_Item = tuple[RolloutKey, Any, Any]  # a rollout to run: its key, the prompt, the example


@dataclasses.dataclass
class _Tally:
    """What one batch's finished rollouts said: failures, the last error, why it stops."""

    n_failed: int = 0
    last_error: str | None = None
    bad_score: str | None = None  # evaluate returned a non-score or one out of range
    breach: EvaluationError | None = None  # the error policy says the backend is broken


class RolloutEngine:
    """Runs batches of rollouts with a cache, a hard budget, an error policy and events.

    ``max_rollouts`` is never exceeded, across any number of kills: each rollout is journaled as
    started before ``evaluate`` is called, and as finished the moment it finishes (from the worker
    thread, or on arrival for process backends); a started rollout counts as spent even if its
    result was lost. A batch that would cross the budget is cut (``n_cut``); cache hits cost
    nothing. A failure (exception, timeout, non-finite score) becomes a failed :class:`Rollout`
    scored ``failure_score``; the :class:`ErrorPolicy` quarantines examples that keep failing and
    raises :class:`EvaluationError` when the recent failure rate says the backend is broken.
    ``stop_check`` (e.g. a STOP file) and Ctrl-C end a batch within a fraction of a second, even
    while a rollout hangs. An ``async def evaluate`` runs on policyopt's event loop with ``n_jobs``
    coroutines in flight (:mod:`policyopt.rollout.aio`); on a process backend each worker awaits it.

    A ``journal`` of an earlier run answers what it recorded, failures included, and its results
    pass through the error policy again in journal order; ``retry_failures`` (True, or a string
    saying why) pays its failures again instead (:mod:`policyopt.rollout.account`).
    """

    def __init__(
        self,
        evaluate: Callable[[Any, Any], object],
        *,
        max_rollouts: int | None = None,
        n_jobs: int = 1,
        backend: str | joblib.parallel.ParallelBackendBase | None = None,
        max_errors: int | None = None,
        max_error_rate: float | None = 0.5,
        error_window: int = 20,
        quarantine_after: int | None = 3,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        failure_score: float = 0.0,
        score_range: tuple[float, float] | None = None,
        events: EventBus | None = None,
        journal: Journal | None = None,
        stop_check: Callable[[], str | None] | None = None,
        retry_failures: bool | str = False,
    ) -> None:
        if not callable(evaluate):
            raise ConfigError(f"'evaluate' must be callable; got {describe(evaluate)}.")
        check_settings(max_rollouts, n_jobs, timeout)
        self.score_range = check_score_range(score_range)
        check_backend(backend)
        check_shippable(evaluate, backend)
        self.evaluate = captured(evaluate, is_async=is_async_callable(evaluate))
        self.max_rollouts = max_rollouts
        self.n_jobs = n_jobs
        self.backend = backend
        self.policy = ErrorPolicy(
            max_error_rate=max_error_rate,
            error_window=error_window,
            quarantine_after=quarantine_after,
            max_errors=max_errors,
        )
        self.timeout = float(timeout) if timeout is not None else None
        self.failure_score = float(failure_score)
        self.events = events if events is not None else EventBus()
        self.journal = journal
        self.stop_check = stop_check
        self.in_process = runs_in_process(backend)
        # Dask: one future per rollout on a cluster (preflight, kill-safe; see dask_backend)
        self._dask = DaskRunner(backend, evaluate, n_jobs) if is_dask(backend) else None
        width = n_jobs if n_jobs > 0 else (os.cpu_count() or 1)
        self._slots = Slots(width)
        # an async evaluate runs on policyopt's event loop, n_jobs coroutines in flight
        self._aio = AsyncSlots(width) if self.in_process and is_async_callable(evaluate) else None

        self._examples: dict[str, dict[ExampleId, Any]] = {}
        self._prompt_keys: dict[int, tuple[Any, str]] = {}
        self.account = RolloutAccount(max_rollouts)  # what was paid and reached (account.py)
        # a journal's results answer from the cache (a resumed run replays them for free)
        self._cache: dict[RolloutKey, Rollout] = {}
        if journal is not None:
            why = "retry_failures=True" if retry_failures is True else retry_failures or None
            self._cache = self.account.load(journal, failure_score=self.failure_score, retry=why)
            if (note := self.account.note()) is not None:
                logger.log(logging.WARNING if self.account.unreplayed else logging.INFO, note)
        self._lock = threading.Lock()  # one batch at a time
        self._state = threading.Lock()  # counters, cache and journal order across workers
        self._cancel = threading.Event()
        self._stop_reason: str | None = None
        self._next_stop_check = 0.0
        self._pool = Pool(n_jobs, backend)  # started by the first batch that needs it

    def close(self) -> None:
        """Release the worker pool and close the journal (the cache still answers)."""
        self._cancel.set()  # workers still waiting on a hung call let go at once
        if self._dask is not None:
            self._dask.close()
        if self._aio is not None:
            self._aio.close()
        self._pool.close()
        if self.journal is not None:
            self.journal.close()

    def __enter__(self) -> RolloutEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------- bookkeeping
    # The counts, one meaning each: see policyopt.rollout.account.
    @property
    def rollouts_used(self) -> int:
        """Rollouts paid so far: every started call, including those reloaded or lost."""
        return self.account.paid

    @property
    def rollouts_spent(self) -> int:
        """The run's rollout clock: paid in this process plus journaled ones reached so far.

        In a resumed run this equals what the original run had spent at the same point, so
        decisions and records based on it replay exactly.
        """
        return self.account.clock

    @property
    def payable(self) -> int | None:
        """Rollouts that can still be started (``None`` when unlimited): the hard, real limit."""
        return self.account.payable

    @property
    def budget_left(self) -> int | None:
        """Budget left to plan steps with: by the run's clock (:attr:`rollouts_spent`), and never
        more than can still be paid (:attr:`payable` plus the journaled results a resumed run
        has not reached yet, which come back free)."""
        return self.account.plannable

    @property
    def resumed_rollouts(self) -> int:
        """How many paid rollouts were reloaded from the journal at start."""
        return self.account.resumed

    @property
    def lost_rollouts(self) -> int:
        """Rollouts an earlier process started but never recorded (killed): paid, no result."""
        return self.account.lost

    @property
    def journal_failures(self) -> int:
        """Failed rollouts an earlier process recorded: replayed, or paid again when retried."""
        return self.account.journal_failures

    @property
    def failures(self) -> list[tuple[str, str]]:
        """``(split/example, message)`` of every failed rollout of the run's path (replayed ones
        from the journal included)."""
        return list(self.policy.failures)

    @property
    def quarantined(self) -> dict[str, str]:
        """``split/example -> last error`` of the examples that kept failing."""
        return {f"{s}/{i}": m for (s, i), m in self.policy.quarantined.items()}

    def add_split(self, name: str, examples: Sequence[Any]) -> list[ExampleId]:
        """Register a dataset under ``name`` and return its example ids (validated)."""
        ids = example_ids(examples, name=name)
        if name in self._examples:
            known = self._examples[name]
            if list(known) != ids:
                raise DatasetError(
                    f"Split {name!r} was registered before with other example ids; use "
                    "another split name for another dataset."
                )
        self._examples[name] = dict(zip(ids, examples, strict=True))
        return ids

    def example(self, split: str, example_id: ExampleId) -> Any:
        """The example object registered under ``split`` / ``example_id``."""
        try:
            return self._examples[split][example_id]
        except KeyError:
            raise DatasetError(
                f"No example {example_id!r} in split {split!r}; register it with add_split()."
            ) from None

    def _key(self, prompt: Any) -> str:
        # Prompts are hashed once per object: a batch reuses the same few prompt objects.
        hit = self._prompt_keys.get(id(prompt))
        if hit is not None and hit[0] is prompt:
            return hit[1]
        key = prompt_key(prompt)
        if len(self._prompt_keys) > 4096:
            self._prompt_keys.clear()
        self._prompt_keys[id(prompt)] = (prompt, key)
        return key

    def cached(self, prompt: Any, split: str, example_id: ExampleId) -> Rollout | None:
        """The cached rollout of ``prompt`` on that example, if any (costs nothing)."""
        return self._cache.get((self._key(prompt), split, example_id))

    def count_uncached(self, prompt_ids: Sequence[tuple[Any, ExampleId]], split: str) -> int:
        """How many distinct rollouts of this request cost budget by the run's clock.

        Journaled rollouts not yet reached by a resumed run count as costs, as they did for the
        original run: compare with :attr:`budget_left`. Quarantined examples cost nothing.
        """
        keys = {(self._key(p), split, i) for p, i in prompt_ids}
        return sum(
            1
            for k in keys
            if self.account.counts_as_cost(k, self._cache)
            and not self.policy.is_quarantined(split, k[2])
        )

    def request_stop(self, reason: str) -> None:
        """Stop the current batch as soon as possible; :meth:`run` raises :class:`StopRequested`."""
        self._stop_reason = self._stop_reason or reason
        self._cancel.set()

    # ----------------------------------------------------------------- running
    def run(
        self, prompt_ids: Sequence[tuple[Any, ExampleId]], *, split: str, label: str = ""
    ) -> BatchResult:
        """Evaluate each ``(prompt, example_id)`` of ``split``; results come back in input order.

        Raises :class:`StopRequested` when ``stop_check`` fired or :meth:`request_stop` was
        called (finished rollouts are kept), :class:`EvaluationError` when the error policy
        says the backend is broken, :class:`ScoreTypeError` when ``evaluate`` returned a
        non-score or a score outside ``score_range``.
        """
        with self._lock:
            self._poll_stop(force=True)
            if self._stop_reason is not None:
                raise StopRequested(self._stop_reason)
            self._cancel = threading.Event()
            try:
                return self._run(prompt_ids, split, label)
            except BaseException:
                self._cancel.set()  # Ctrl-C or an error: workers stop waiting
                raise

    def _run(
        self, prompt_ids: Sequence[tuple[Any, ExampleId]], split: str, label: str
    ) -> BatchResult:
        start = time.perf_counter()
        results, todo, payload, n_cached = self._sort(prompt_ids, split)
        tally = _Tally()
        self._replay(tally)
        payable = self.account.payable
        allowed = len(payload) if payable is None else max(0, min(len(payload), payable))
        if tally.breach is not None:  # the original run stopped here: nothing more is paid
            allowed = 0
        n_cut = sum(len(todo[key]) for key, _, _ in payload[allowed:])
        payload = payload[:allowed]
        try:
            self._collect(payload, todo, results, split, label, tally)
        finally:
            if self.journal is not None:
                self.journal.sync()
            self.events.emit(
                BatchDone(
                    label=label,
                    n_requested=len(prompt_ids),
                    n_run=len(payload),
                    n_cached=n_cached,
                    n_failed=tally.n_failed,
                    last_error=tally.last_error,
                    n_cut=n_cut,
                    rollouts_used=self.account.paid,
                    max_rollouts=self.max_rollouts,
                    duration_s=time.perf_counter() - start,
                )
            )
        if tally.bad_score is not None:
            raise ScoreTypeError(tally.bad_score)
        if tally.breach is not None:
            if self.journal is not None:  # a resume pays the failures before it again
                self.journal.append(dict(BREACH_RECORD))
            raise tally.breach
        if self._stop_reason is not None:
            raise StopRequested(self._stop_reason)
        return BatchResult(tuple(results), n_cut)

    def _sort(
        self, prompt_ids: Sequence[tuple[Any, ExampleId]], split: str
    ) -> tuple[list[Rollout | None], dict[RolloutKey, list[int]], list[_Item], int]:
        """A batch's requests sorted out: answered from the cache or by quarantine (in place in
        the results), or to run, each distinct rollout once (with the positions it answers)."""
        examples = self._examples.get(split)
        if examples is None:
            raise DatasetError(f"Unknown split {split!r}; register it first with add_split().")
        results: list[Rollout | None] = [None] * len(prompt_ids)
        todo: dict[RolloutKey, list[int]] = {}
        payload: list[_Item] = []
        n_cached = 0
        for index, (prompt, example_id) in enumerate(prompt_ids):
            key = (self._key(prompt), split, example_id)
            hit = self._cache.get(key)
            if hit is not None:
                results[index] = hit
                n_cached += 1
                self.account.reach(key, hit)
                continue
            if example_id not in examples:
                raise DatasetError(f"No example {example_id!r} in split {split!r}.")
            if self.policy.is_quarantined(split, example_id):
                results[index] = self._quarantined_rollout(key)
                continue
            if key in todo:
                todo[key].append(index)
                continue
            todo[key] = [index]
            payload.append((key, prompt, examples[example_id]))
        return results, todo, payload, n_cached

    def _replay(self, tally: _Tally) -> None:
        """The error policy counts the journaled results this batch reached, in journal order,
        as the original run counted them when it paid them: quarantines and a breach replay."""
        with self._state:
            for key in self.account.replays():
                rollout = self._cache[key]
                self.policy.record(key[1], key[2], rollout.error)
                if rollout.failed and tally.breach is None:
                    tally.breach = self.policy.breach()

    def _collect(
        self,
        payload: list[_Item],
        todo: dict[RolloutKey, list[int]],
        results: list[Rollout | None],
        split: str,
        label: str,
        tally: _Tally,
    ) -> None:
        """Run the payload and put each rollout where it was asked for, as it finishes; a bad
        score or a breach of the error policy cancels the rest (what finished is journaled)."""
        next_progress = time.perf_counter() + _PROGRESS_EVERY_S
        for finished, (index, outcome, rollout) in enumerate(self._dispatch(payload), start=1):
            key = payload[index][0]
            if outcome.kind in ("type_error", "range_error"):
                tally.bad_score = tally.bad_score or (
                    f"example {key[2]!r} of split {split!r}: {outcome.error}"
                )
                self._cancel.set()
                continue
            if outcome.kind == "no_slot":
                self.policy.record_unpaid(split, key[2], outcome.error or "no slot")
                rollout = failed_rollout(key, outcome.error or "no slot", 0.0, self.failure_score)
            if rollout is None:  # cancelled or abandoned: no result
                continue
            for position in todo[key]:
                results[position] = rollout
            if rollout.failed:
                tally.n_failed += 1
                tally.last_error = rollout.error
                if tally.breach is None:
                    tally.breach = self.policy.breach()
                    if tally.breach is not None:
                        self._cancel.set()  # let the rest go; what finished is journaled
            if finished < len(payload) and time.perf_counter() >= next_progress:
                next_progress = time.perf_counter() + _PROGRESS_EVERY_S
                self.events.emit(
                    RolloutsProgress(
                        label=label,
                        done=finished,
                        total=len(payload),
                        rollouts_used=self.account.paid,
                        max_rollouts=self.max_rollouts,
                    )
                )

    def _dispatch(self, payload: list[tuple[Any, Any, Any]]) -> Iterator[_Done]:
        """Yield ``(index, outcome, rollout)`` per payload item, in completion order."""
        if self._aio is not None:
            yield from self._aio.run(
                [(index, _fresh(item[1]), item[2]) for index, item in enumerate(payload)],
                self.evaluate,
                self.timeout,
                cancelled=self._cancelled,
                on_start=lambda index: self._started(payload[index][0]),
                on_done=lambda index, outcome, seq: self._settle(
                    payload[index], index, outcome, seq
                ),
            )
            return
        if self.in_process:
            if self.n_jobs == 1 or len(payload) <= 1:
                for index, (key, prompt, example) in enumerate(payload):
                    yield self._one(index, key, prompt, example)
                return
            yield from self._pool(
                joblib.delayed(self._one)(index, key, prompt, example)
                for index, (key, prompt, example) in enumerate(payload)
            )
            return
        # Another process or machine: the start is recorded when joblib takes the task (the
        # generator is consumed lazily), the result the moment it comes back.
        evaluate, timeout = self.evaluate, self.timeout
        seqs: dict[int, int] = {}

        def shipped() -> Iterator[Any]:
            for index, (key, prompt, example) in enumerate(payload):
                if self._cancelled():
                    return
                seqs[index] = self._started(key)
                yield joblib.delayed(execute)(index, evaluate, _fresh(prompt), example, timeout)

        if self._dask is not None:
            outcomes: Iterable[Outcome] = self._dask.run(
                shipped(), example=payload[0][2] if payload else None, cancelled=self._cancelled
            )
        elif self.n_jobs == 1 or len(payload) <= 1:
            outcomes = (fn(*args, **kw) for fn, args, kw in shipped())
        else:
            outcomes = self._pool(shipped())
        for outcome in outcomes:
            key = payload[outcome.index][0]
            outcome = self._in_range(outcome)
            yield outcome.index, outcome, self._finished(key, outcome, seqs.get(outcome.index))

    def _one(self, index: int, key: RolloutKey, prompt: Any, example: Any) -> _Done:
        """One in-process rollout on a worker thread: start and result journaled right here."""
        seqs: list[int] = []
        outcome = self._slots.call(
            index,
            self.evaluate,
            _fresh(prompt),
            example,
            self.timeout,
            cancelled=self._cancelled,
            on_start=lambda: seqs.append(self._started(key)),
        )
        outcome = self._in_range(outcome)
        return index, outcome, self._finished(key, outcome, seqs[0] if seqs else None)

    def _settle(self, item: tuple[Any, Any, Any], index: int, outcome: Outcome, seq: Any) -> _Done:
        """A finished async rollout, on the event loop: checked, cached and journaled at once."""
        outcome = self._in_range(outcome)
        return index, outcome, self._finished(item[0], outcome, seq)

    def _cancelled(self) -> bool:
        self._poll_stop()
        return self._cancel.is_set()

    def _poll_stop(self, *, force: bool = False) -> None:
        """Ask ``stop_check`` (at most every 0.25 s) and cancel the batch when it fires."""
        if self.stop_check is None or self._stop_reason is not None:
            return
        now = time.monotonic()
        if not force and now < self._next_stop_check:
            return
        self._next_stop_check = now + 0.25
        reason = self.stop_check()
        if reason:
            self.request_stop(reason)

    def _started(self, key: RolloutKey) -> int:
        """Charge one rollout and journal that it started, before ``evaluate`` is called."""
        with self._state:
            seq = self.account.charge(key)
            if self.journal is not None:
                self.journal.append(
                    {
                        "type": "start",
                        "n": seq,
                        "prompt": key[0],
                        "split": key[1],
                        "example": key[2],
                    }
                )
        return seq

    def _in_range(self, outcome: Outcome) -> Outcome:
        """An ``ok`` outcome whose score is outside ``score_range`` becomes a ``range_error``."""
        if outcome.kind != "ok" or outcome.score is None:
            return outcome
        problem = out_of_range(outcome.score, self.score_range)
        if problem is None:
            return outcome
        return dataclasses.replace(outcome, kind="range_error", score=None, error=problem)

    def _finished(self, key: RolloutKey, outcome: Outcome, seq: int | None) -> Rollout | None:
        """Cache and journal one finished rollout at once; None when there is no result."""
        if outcome.kind not in ("ok", "error"):
            return None
        if outcome.kind == "ok" and outcome.score is not None:
            rollout = Rollout(
                key[0], key[1], key[2], settle(outcome.score), None, False, outcome.duration_s
            )
        else:
            message = outcome.error or "unknown error"
            rollout = failed_rollout(key, message, outcome.duration_s, self.failure_score)
        with self._state:
            self.policy.record(key[1], key[2], rollout.error)
            # Failures are cached too: within a run nothing is paid twice. They are journaled
            # with their error and replayed when a run is resumed, unless it retries them.
            self._cache[key] = dataclasses.replace(rollout, cached=True)
            if self.journal is not None:
                self.journal.append(to_record(rollout, seq))
        return rollout

    def _quarantined_rollout(self, key: RolloutKey) -> Rollout:
        message = self.policy.quarantined[(key[1], key[2])]
        reason = f"quarantined after repeated failures: {message}"
        return dataclasses.replace(failed_rollout(key, reason, 0, self.failure_score), cached=True)


def _fresh(prompt: Any) -> Any:
    """A copy of a dict prompt, so user code that mutates it cannot corrupt the optimizer."""
    return dict(prompt) if isinstance(prompt, Mapping) else prompt
