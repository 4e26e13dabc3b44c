"""What every optimizer run shares: run dir, events, engine, splits, stops, failure policy.

An optimizer builds one :class:`RunContext` per ``optimize`` call, runs its loop through
:meth:`RunContext.guard` (which turns faults into stop reasons, the same way for every
algorithm) and closes it when done. The failure policy, in one place:

- ``evaluate`` errors: recorded as failed rollouts; an example that keeps failing is
  quarantined; when the recent failure rate says the backend is broken the run stops with
  ``stop_reason="evaluate_errors"`` and its best result so far (``strict=True`` raises instead).
- LM errors (reflection, instruction proposal): the LM retries; then the proposal is skipped;
  after ``MAX_LM_FAILURES`` in a row the run stops with ``stop_reason="lm_errors"``.
- Ctrl-C, the STOP file and the time limit end the run within seconds, even mid-batch, with
  ``stop_reason`` ``interrupted``, ``stop_file`` or ``time_limit``.

Without a result to return (the seed prompt not yet scored), the fault is raised instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
)

from policyopt.book import TIE_TOLERANCE, CandidateBook
from policyopt.errors import ConfigError, EvaluationError, LMError, StopRequested
from policyopt.events import (
    BatchDone,
    EventBus,
    JSONLEventLog,
    Listener,
    RunFinished,
    RunStarted,
)
from policyopt.ledger import Segments, with_lm_cap
from policyopt.progress import ProgressDisplay
from policyopt.proposals import brief
from policyopt.rollout import RolloutEngine
from policyopt.rollout.engine import DEFAULT_TIMEOUT_S
from policyopt.state.memo import JournaledLM
from policyopt.state.rundir import RunDir, callable_identity, fingerprint
from policyopt.stopping import Stopper
from policyopt.types import OptimizationResult, Program, example_ids

__all__ = [
    "MAX_LM_FAILURES",
    "RESUMABLE",
    "LMUnavailable",
    "RunContext",
    "RunSettings",
    "call_all",
    "proposal_workers",
    "settings_or_error",
]

logger = logging.getLogger("policyopt")

_S = TypeVar("_S", bound=BaseModel)
_T = TypeVar("_T")

#: LM failures in a row (after the LM's own retries) before a run stops with "lm_errors"
MAX_LM_FAILURES = 5


def settings_or_error(model: type[_S], values: Mapping[str, Any], optimizer: str) -> _S:
    """``model(**values)``, with pydantic's errors turned into one clear :class:`ConfigError`
    per bad setting: its name, what was wrong, and the value given."""
    try:
        return model(**values)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"]) or "settings"
            lines.append(f"{where}: {error['msg']} (got {error.get('input')!r:.80})")
        raise ConfigError(f"Invalid {optimizer} settings: " + "; ".join(lines)) from None


def proposal_workers(lm: Any, n_calls: int, attempts: int, n_jobs: int) -> int:
    """Threads for ``n_calls`` proposals of up to ``attempts`` LM calls each: as many as
    ``n_jobs`` allows, or one when the optimizer LM's caps may refuse some of them (see
    :meth:`~policyopt.state.memo.JournaledLM.fits`: then the order decides, not the timing)."""
    workers = max(1, min(n_calls, n_jobs if n_jobs > 0 else 4))
    fits = getattr(lm, "fits", None)
    if fits is not None and not fits(n_calls * attempts):
        return 1
    return workers


def call_all(calls: Sequence[Callable[[], _T]], workers: int) -> list[_T]:
    """Run ``calls`` (LM proposals) on ``workers`` daemon threads; their results in order.

    An exception is raised once every sibling has finished (their answers are journaled), the
    first in order. Ctrl-C abandons the calls in flight instead of waiting for them, and being
    daemon threads they do not hold up the end of the process either: the run ends at once.
    """
    import queue

    results: list[Any] = [None] * len(calls)
    errors: list[BaseException | None] = [None] * len(calls)
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in range(len(calls)):
        todo.put(index)
    finished = threading.Semaphore(0)
    cancelled = threading.Event()

    def work() -> None:
        while not cancelled.is_set():
            try:
                index = todo.get_nowait()
            except queue.Empty:
                return
            try:
                results[index] = calls[index]()
            except BaseException as exc:  # handed to the caller below
                errors[index] = exc
            finished.release()

    for _ in range(max(1, min(workers, len(calls)))):
        threading.Thread(target=work, name="policyopt-propose", daemon=True).start()
    try:
        for _ in calls:
            finished.acquire()  # interruptible: Ctrl-C lands here
    except BaseException:
        cancelled.set()  # queued calls never start; calls in flight are left to end alone
        raise
    for error in errors:
        if error is not None:
            raise error
    return results


def _one_lm(specific: Any, alias: Any, name: str) -> Any:
    """The optimizer's LM from its own keyword or the common alias ``lm`` (not both)."""
    if specific is not None and alias is not None:
        raise ConfigError(f"Give the LM once: {name}= or lm=, not both.")
    if specific is None and alias is None:
        raise ConfigError(f"An LM is required: pass {name}= (or lm=), e.g. 'openai/gpt-4o-mini'.")
    return specific if specific is not None else alias


class LMUnavailable(LMError):
    """The optimizer's LM failed ``MAX_LM_FAILURES`` times in a row: the run stops."""


#: settings of every run that may change when a run_dir is resumed (the trajectory is the same)
RESUMABLE = frozenset(
    {
        "max_rollouts",
        "max_time_s",
        "max_cost_usd",
        "max_lm_calls",
        "max_lm_tokens",
        "n_jobs",
        "backend",
        "progress",
        "run_dir",
        "timeout",
        "max_errors",
        "max_error_rate",
        "error_window",
        "quarantine_after",
        "strict",
        "accept_changed",
        "retry_failures",
    }
)


class RunSettings(BaseModel):
    """The settings every optimizer run has: budget, parallelism, error policy, limits, run dir.

    Optimizers extend it with their own; instances are frozen and unknown names are errors.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_rollouts: int = Field(ge=1, description="hard budget of evaluate() calls")
    seed: int = Field(0, description="seed of every random choice (same seed, same run)")
    n_jobs: int = Field(4, description="rollouts in parallel (-1: all cores)")
    backend: str | None = Field(
        None,
        description="joblib backend (None: threads), or 'dask' (the current Client) or "
        "'dask://ADDRESS' (a Dask scheduler)",
    )
    max_time_s: float | None = Field(None, gt=0, description="wall-clock limit in seconds")
    max_cost_usd: float | None = Field(None, gt=0, description="cap on the optimizer's LM cost")
    max_lm_calls: int | None = Field(
        None, ge=1, description="cap on the optimizer LM's calls (hard: a call past it is not made)"
    )
    max_lm_tokens: int | None = Field(
        None, ge=1, description="cap on the optimizer LM's tokens (no call starts past it)"
    )
    max_errors: int | None = Field(
        None, ge=0, description="failed rollouts after which the run stops (None: no cap)"
    )
    max_error_rate: float | None = Field(
        0.5, gt=0, le=1, description="stop when this share of the last error_window failed"
    )
    error_window: int = Field(20, ge=1, description="recent rollouts the error rate looks at")
    quarantine_after: int | None = Field(
        3, ge=1, description="failures of one example before it is quarantined"
    )
    strict: bool = Field(False, description="raise on evaluate/LM failure instead of stopping")
    timeout: float | None = Field(
        DEFAULT_TIMEOUT_S, gt=0, description="seconds per rollout (a timeout is a failure)"
    )
    score_range: tuple[float, float] | None = Field(
        (0.0, 1.0), description="scores evaluate may return; the top is the perfect score"
    )
    failure_score: float = Field(0.0, description="score of a failed rollout")
    progress: bool = Field(True, description="live progress on stderr")
    run_dir: str | None = Field(
        None, description="journal the run here; the same run_dir resumes it"
    )
    accept_changed: tuple[str, ...] = Field(
        (),
        description="resume a run_dir although these parts of its identity changed (e.g. "
        "'evaluate'): its cached scores were made by the old ones",
    )
    retry_failures: bool = Field(
        False, description="on resume, pay the failed rollouts the journal holds again"
    )

    @field_validator("n_jobs")
    @classmethod
    def _n_jobs(cls, value: int) -> int:
        if value == 0 or value < -1:
            raise ValueError("must be >= 1, or -1 for all cores")
        return value

    @field_validator("score_range")
    @classmethod
    def _score_range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not value[0] < value[1]:
            raise ValueError("must be (low, high) with low < high, or None")
        return value

    @field_serializer("accept_changed")
    def _dump_accepted(self, value: tuple[str, ...]) -> list[str]:
        return list(value)

    @field_serializer("score_range")
    def _dump_range(self, value: tuple[float, float] | None) -> list[float] | None:
        return None if value is None else [value[0], value[1]]  # JSON has no tuples

    def top_score(self) -> float:
        """The perfect score: the top of ``score_range`` (1.0 when unchecked)."""
        return 1.0 if self.score_range is None else self.score_range[1]

    def perfect(self) -> float:
        """The score that counts as solved (a run with ``stop_at_perfect`` stops there): the
        optimizer's ``perfect_score`` setting where it has one and it is set, else the top."""
        target = getattr(self, "perfect_score", None)
        return self.top_score() if target is None else float(target)


class RunContext:
    """The shared machinery of one run; ``settings`` is the optimizer's pydantic settings."""

    def __init__(
        self,
        *,
        optimizer: str,
        settings: BaseModel,
        resumable: Iterable[str],
        identity: Mapping[str, Any],
        program: Program,
        trainset: Sequence[Any],
        valset: Sequence[Any] | None,
        listeners: Iterable[Listener] = (),
    ) -> None:
        s: Any = settings
        self.optimizer = optimizer
        self.settings: Any = settings
        self.started = time.perf_counter()
        self.events = EventBus(listeners)
        self.rundir: RunDir | None = None
        self.retry_failures: bool | str = False  # why the journal's failures are paid again
        self.log: JSONLEventLog | None = None
        if s.run_dir is not None:
            dump = settings.model_dump()
            ident = {k: v for k, v in dump.items() if k not in set(resumable)}
            ident.update(identity)
            ident["evaluate"] = callable_identity(program.evaluate)
            # the proposal prompts' objective and background (only when given: older run dirs)
            ident.update({k: v for k in ("objective", "background") if (v := getattr(program, k))})
            # what evaluate calls, where the code that built it knows (the CLI: the task model)
            extra = getattr(program.evaluate, "policyopt_identity", None)
            if isinstance(extra, Mapping):
                ident.update({str(k): v for k, v in extra.items()})
            evaluate_parts = {"evaluate", *(map(str, extra) if isinstance(extra, Mapping) else ())}
            ident["train"] = fingerprint(trainset, example_ids(trainset, name="trainset"))
            ident["val"] = (
                None if valset is None else fingerprint(valset, example_ids(valset, name="valset"))
            )
            self.rundir = RunDir(
                s.run_dir,
                optimizer=optimizer,
                identity=ident,
                settings=dump,
                accept_changed=s.accept_changed,
            )
            # failures are paid again when the user asks, or new evaluate code may fix them
            if s.retry_failures:
                self.retry_failures = True
            elif changed := sorted(evaluate_parts & set(self.rundir.changed)):
                self.retry_failures = f"{', '.join(changed)} changed (accept_changed)"
            self.log = JSONLEventLog(self.rundir.events_path)
            self.events.subscribe(self.log)
        self.segments = Segments(self.rundir.records("segment") if self.rundir else [])
        try:
            self._setup(s, program, trainset, valset)
        except BaseException:
            if self.rundir is not None:  # let the run dir go: this run never started
                self.rundir.close()
            raise

    def _setup(
        self, s: Any, program: Program, trainset: Sequence[Any], valset: Sequence[Any] | None
    ) -> None:
        self.stopper = Stopper(
            max_time_s=s.max_time_s,
            max_cost_usd=s.max_cost_usd,
            max_lm_calls=s.max_lm_calls,
            max_lm_tokens=s.max_lm_tokens,
            patience=getattr(s, "patience", None),
            stop_file=self.rundir.stop_file if self.rundir else None,
        )
        self.engine = RolloutEngine(
            program.evaluate,
            max_rollouts=s.max_rollouts,
            n_jobs=s.n_jobs,
            backend=s.backend,
            max_errors=s.max_errors,
            max_error_rate=s.max_error_rate,
            error_window=s.error_window,
            quarantine_after=s.quarantine_after,
            timeout=s.timeout,
            failure_score=s.failure_score,
            score_range=s.score_range,
            events=self.events,
            journal=self.rundir.journal if self.rundir else None,
            stop_check=self._urgent_stop,
            retry_failures=self.retry_failures,
        )
        self._has_result: Callable[[], bool] = lambda: False
        self.brief = brief(program.objective, program.background)  # heads every proposal prompt
        self._lms: list[JournaledLM] = []
        self.estimate: dict[str, Any] = {}  # as announced, the optimizer-LM cap included
        self.strategies_resumable = True  # an optimizer with custom strategies may say no
        self.book = CandidateBook(self, tolerance=getattr(s, "tie_tolerance", TIE_TOLERANCE))
        self.strict: bool = s.strict
        self.stop_detail: str | None = None
        self._lm_failures = 0
        self._lm_lock = threading.Lock()
        self.train_split = "train"
        self.train_ids = self.engine.add_split("train", trainset)
        self.val_split = "train" if valset is None else "val"
        self.val_ids = self.train_ids if valset is None else self.engine.add_split("val", valset)
        self.display = ProgressDisplay() if s.progress else None
        if self.display is not None:
            self.events.subscribe(self.display)
        if self.rundir is not None:  # each batch journals how long this segment has run
            self.events.subscribe(self._journal_time)

    # ------------------------------------------------------------------ lifecycle
    def execute(
        self,
        *,
        optimizer: str | None = None,
        seed_prompt: Any,
        settings: Mapping[str, Any] | None = None,
        estimate: Mapping[str, Any],
        body: Callable[[], str],
        has_result: Callable[[], bool] | None = None,
        finish: Callable[[str], OptimizationResult],
        budget_hint: str = "",
    ) -> OptimizationResult:
        """One run, start to end, the same for every optimizer.

        Refuses a budget that cannot score the seed prompt on the valset; announces the run
        (``RunStarted`` with the up-front ``estimate``); runs ``body`` (the algorithm's loop,
        returning its stop reason) under :meth:`guard`; builds the result with ``finish`` and
        publishes it (``result.json``, ``RunFinished``); always releases the run's resources.
        Defaults: the context's name, all its settings, a result once the book has a candidate.
        """
        try:
            seed_requests = [(seed_prompt, i) for i in self.val_ids]
            if not self.affordable(seed_requests, self.val_split):
                max_rollouts = self.engine.max_rollouts
                raise ConfigError(
                    f"max_rollouts={max_rollouts} cannot even score the seed prompt on the "
                    f"valset ({len(self.val_ids)} examples).{budget_hint} Raise max_rollouts "
                    "or pass a smaller valset."
                )
            estimate = self.estimate = self.announce_lm_cap(estimate)
            self.events.emit(
                RunStarted(
                    optimizer=optimizer or self.optimizer,
                    max_rollouts=self.engine.max_rollouts or 0,
                    n_train=len(self.train_ids),
                    n_val=len(self.val_ids),
                    settings=dict(self.settings.model_dump() if settings is None else settings),
                    estimate=dict(estimate),
                    resumed_rollouts=self.engine.resumed_rollouts,
                )
            )
            reason = self.guard(body, has_result=has_result or (lambda: bool(self.book)))
            result = self.billed(finish(reason))
            if self.rundir is not None:
                self.rundir.write_result(result.to_json(indent=1))
            self.events.emit(
                RunFinished(
                    best_score=result.best_score,
                    best_candidate=result.best_candidate,
                    n_rollouts=result.n_rollouts,
                    stop_reason=result.stop_reason,
                    wall_time_s=result.wall_time_s,
                    best_prompt=result.best_prompt,
                    lm_usage={role: u.model_dump() for role, u in result.lm_usage.items()},
                    cost_usd=result.cost_usd,
                )
            )
            return result
        finally:
            self.close()

    def _journal_time(self, event: Any) -> None:
        """After each batch, journal how long this segment has run (a kill loses no more)."""
        if isinstance(event, BatchDone) and self.engine.journal is not None:
            self.engine.journal.append(self.segments.record(self.wall()))

    def billed(self, result: OptimizationResult) -> OptimizationResult:
        """``result`` with the whole bill of the run: wall time and optimizer-LM usage summed over
        every segment of a resumed run (live calls of a segment whose path was not replayed
        included), not only this process's."""
        update: dict[str, Any] = {"wall_time_s": self.segments.total(self.wall())}
        if len(self._lms) == 1 and len(result.lm_usage) == 1:
            bill = self._lms[0].billed
            update["lm_usage"] = {next(iter(result.lm_usage)): bill}
            update["cost_usd"] = bill.cost_usd
        return result.model_copy(update=update)

    def affordable(
        self, requests: Sequence[tuple[Any, str]], split: str, *, extra: int = 0
    ) -> bool:
        """Whether the budget (by the run's clock) pays for these rollouts plus ``extra``.

        Optimizers never start a step the budget cannot finish.
        """
        left = self.engine.budget_left
        return left is None or self.engine.count_uncached(requests, split) + extra <= left

    def journaled_lm(self, lm: Any, *, kind: str, rollouts_per_call: int) -> JournaledLM:
        """The optimizer's LM for this run: journaled and replayed under ``kind`` records, its
        failures under the run's LM failure policy, capped by ``max_lm_calls``/``max_lm_tokens``,
        and never called live when the budget cannot pay the ``rollouts_per_call`` rollouts that
        score its answer (the run stops with ``"budget"`` instead)."""
        engine = self.engine

        def can_pay(calls: int) -> bool:
            left = engine.payable
            return left is None or left >= calls * rollouts_per_call

        journaled = JournaledLM(
            lm,
            journal=engine.journal,
            memo=self.memo(kind),
            kind=kind,
            on_error=self.lm_failed,
            on_ok=self.lm_ok,
            max_calls=self.settings.max_lm_calls,
            max_tokens=self.settings.max_lm_tokens,
            can_pay=can_pay,
            brief=self.brief,
            verdicts=[r for r in self.memo("verdict") if r.get("role") == kind],
            on_verdict=self.events.emit,
        )
        self._lms.append(journaled)
        return journaled

    def announce_lm_cap(self, estimate: Mapping[str, Any]) -> dict[str, Any]:
        """The run's estimate with its optimizer-LM cap (:func:`policyopt.ledger.with_lm_cap`),
        which from now on holds for the run's LM and its stop rule."""
        out = with_lm_cap(estimate, self.settings.max_lm_calls)
        cap = out.get("lm_calls_cap")
        if cap is not None:
            for lm in self._lms:
                lm.max_calls = cap
            self.stopper.max_lm_calls = cap
        return out

    # ------------------------------------------------------------------ failure policy
    def guard(self, body: Callable[[], str], *, has_result: Callable[[], bool]) -> str:
        """Run the optimizer's loop; return its stop reason, turning faults into reasons.

        A fault with nothing to return (``has_result()`` false), or any fault in ``strict``
        mode (except Ctrl-C and stop requests), is raised instead.
        """
        self._has_result = has_result
        try:
            return body()
        except KeyboardInterrupt:
            if not has_result():
                raise
            return "interrupted"
        except StopRequested as exc:
            if not has_result():
                raise
            return exc.reason
        except (EvaluationError, LMUnavailable) as exc:
            if self.strict or not has_result():
                raise
            self.stop_detail = str(exc)
            reason = "evaluate_errors" if isinstance(exc, EvaluationError) else "lm_errors"
            first = str(exc).splitlines()[0]
            logger.warning("stopping the run: %s", first, extra={"stop_reason": reason})
            return reason

    def _urgent_stop(self) -> str | None:
        """A STOP file or the time limit, checked mid-batch once the run has a result to give
        (the seed prompt is always scored first)."""
        return self.stopper.urgent() if self._has_result() else None

    def lm_failed(self, exc: BaseException, what: str) -> None:
        """Count an LM failure (already retried by the LM): the proposal is skipped.

        Raises :class:`LMUnavailable` after ``MAX_LM_FAILURES`` in a row, or at once when
        ``strict``.
        """
        with self._lm_lock:
            self._lm_failures += 1
            count = self._lm_failures
        logger.warning("%s failed (%d in a row): %s: %s", what, count, type(exc).__name__, exc)
        if self.strict or count >= MAX_LM_FAILURES:
            raise LMUnavailable(
                f"the optimizer's LM failed {count} times in a row; last, {what}: "
                f"{type(exc).__name__}: {str(exc)[:500]}"
            ) from exc

    def lm_ok(self) -> None:
        """An LM call succeeded: the failure streak ends."""
        with self._lm_lock:
            self._lm_failures = 0

    @property
    def resume_exact(self) -> bool:
        """Whether this run's path is the uninterrupted run's: true for a fresh run; for a
        resumed one, only when no earlier segment lost rollouts to a kill, its recorded failures
        replay (not paid again: those may end elsewhere) and the optimizer's strategies replay
        (``strategies_resumable``, set by the optimizer)."""
        engine = self.engine
        if not self.strategies_resumable:
            return False
        return engine.resumed_rollouts == 0 or (
            engine.lost_rollouts == 0 and engine.account.unreplayed == 0
        )

    def fault_details(self) -> dict[str, Any]:
        """What went wrong during the run, for ``OptimizationResult.details``."""
        engine = self.engine
        return {
            "failed_rollouts": len(engine.failures),
            "quarantined_examples": engine.quarantined,
            "lost_rollouts": engine.lost_rollouts,
            "resumed_rollouts": engine.resumed_rollouts,
            "replayed_failures": engine.account.replayed,
            "retried_failures": engine.account.retried,
            "resume_exact": self.resume_exact,
            "stop_detail": self.stop_detail,
        }

    def memo(self, kind: str) -> list[dict[str, Any]]:
        """Journal records of ``kind`` from an earlier run in the same run dir."""
        return self.rundir.records(kind) if self.rundir else []

    def wall(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.started

    def close(self) -> None:
        """Release the pool, and close the journal, the event log and the progress display."""
        self.engine.close()
        if self.log is not None:
            self.log.close()
        if self.rundir is not None:
            self.rundir.close()
        if self.display is not None:
            self.display.close()
