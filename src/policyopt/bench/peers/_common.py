"""What the peer adapters share: quiet logs per cell, counted program runs, GEPA's budget.

Peers print and log a lot (progress bars, bootstrap rounds, every trial). :func:`peer_log` sends
it to a file in the cell's run dir instead of the console, per cell even when cells run in
parallel threads: ``sys.stdout``/``sys.stderr`` and the peers' loggers are routed by a context
variable, so output from another cell (or from the harness) is left alone.

:class:`GEPABudget` keeps a ``gepa`` run (the library's or DSPy's) within its rollout budget:
``max_metric_calls`` alone is checked only between iterations, so gepa overshoots it by up to a
full valset evaluation.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import io
import logging
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from policyopt.errors import ConfigError, EvaluationError, ScoreTypeError
from policyopt.rollout.aio import call_blocking
from policyopt.types import Program, Score

__all__ = [
    "GEPABudget",
    "ProgramRuns",
    "check_settings",
    "gepa_curve",
    "missing",
    "peer_log",
]

#: loggers of the peers (routed to the cell's log file during a run). A package that adds its
#: console handler on import must be imported before :func:`peer_log` (the handler is then set
#: aside with the others). litellm's and httpx's are policyopt's LM layer's: left alone.
PEER_LOGGERS = ("gepa", "dspy", "optuna")


def missing(package: str) -> str | None:
    """``None`` when ``package`` can be imported (checked without importing it), else why not."""
    if importlib.util.find_spec(package) is None:
        return f"the `{package}` package is not installed: pip install 'policyopt[peers]'"
    return None


def check_settings(name: str, settings: dict[str, Any], known: dict[str, Any]) -> dict[str, Any]:
    """``known`` (the defaults) updated with ``settings``; an unknown key is a ConfigError."""
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ConfigError(
            f"{name} does not take the setting(s) {unknown}; it takes {sorted(known)}."
        )
    return {**known, **settings}


# --------------------------------------------------------------------------- quiet logs
_CURRENT: contextvars.ContextVar[TextIO | None] = contextvars.ContextVar(
    "policyopt_peer_log", default=None
)


class _Router(io.TextIOBase):
    """A stand-in for ``sys.stdout``/``sys.stderr``: writes go to the current cell's log file
    when the writing context has one, else to the original stream."""

    def __init__(self, original: TextIO) -> None:
        super().__init__()
        self.original = original

    def write(self, text: str) -> int:
        target = _CURRENT.get() or self.original
        return target.write(text)

    def flush(self) -> None:
        (_CURRENT.get() or self.original).flush()

    def isatty(self) -> bool:
        return _CURRENT.get() is None and self.original.isatty()

    def fileno(self) -> int:
        return self.original.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self.original, "encoding", "utf-8"))


class _Handler(logging.Handler):
    """Writes a record to the current cell's log; from a thread that lost the context (a peer's
    own worker pool), to every open cell log, so nothing reaches the console."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
            current = _CURRENT.get()
            targets = [current] if current is not None else list(_STATE.open_logs)
            for target in targets:
                target.write(line)
        except Exception:  # a log line is never worth a crash
            self.handleError(record)


class _RoutingState:
    """Routers and handlers installed while at least one peer run is active (refcounted)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.open_logs: list[TextIO] = []
        self.handler = _Handler()
        self.handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        self.saved: dict[str, tuple[int, bool, list[logging.Handler]]] = {}
        self.streams: tuple[TextIO, TextIO] | None = None

    def enter(self, log: TextIO) -> None:
        with self.lock:
            self.open_logs.append(log)
            self.active += 1
            if self.active > 1:
                return
            self.streams = (sys.stdout, sys.stderr)
            sys.stdout = _Router(sys.stdout)  # type: ignore[assignment]
            sys.stderr = _Router(sys.stderr)  # type: ignore[assignment]
            for name in PEER_LOGGERS:
                logger = logging.getLogger(name)
                # their own handlers (DSPy's writes to the console) step aside for ours
                self.saved[name] = (logger.level, logger.propagate, list(logger.handlers))
                for handler in list(logger.handlers):
                    logger.removeHandler(handler)
                logger.addHandler(self.handler)
                logger.setLevel(logging.INFO)
                logger.propagate = False

    def exit(self, log: TextIO) -> None:
        with self.lock:
            self.open_logs.remove(log)
            self.active -= 1
            if self.active > 0:
                return
            if self.streams is not None:
                if isinstance(sys.stdout, _Router):
                    sys.stdout = self.streams[0]
                if isinstance(sys.stderr, _Router):
                    sys.stderr = self.streams[1]
                self.streams = None
            for name, (level, propagate, handlers) in self.saved.items():
                logger = logging.getLogger(name)
                logger.removeHandler(self.handler)
                for handler in handlers:
                    logger.addHandler(handler)
                logger.setLevel(level)
                logger.propagate = propagate
            self.saved.clear()


_STATE = _RoutingState()


@contextlib.contextmanager
def peer_log(run_dir: Path, name: str) -> Iterator[TextIO]:
    """Route this context's prints and the peers' logging to ``run_dir/<name>.log``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / f"{name}.log", "a", encoding="utf-8", buffering=1) as log:
        _STATE.enter(log)
        token = _CURRENT.set(log)
        try:
            yield log
        finally:
            _CURRENT.reset(token)
            _STATE.exit(log)


# --------------------------------------------------------------------------- program runs
class ProgramRuns:
    """Counts runs of the task program (the rollouts) and failures, thread-safely.

    A failed run scores 0 with the error as feedback, as policyopt's engine does; if every run
    failed, :meth:`check` raises (the model is unreachable, or the program is broken), so a
    dead server is a failed cell, not a zero score.
    """

    def __init__(self) -> None:
        self.runs = 0
        self.failures = 0
        self.first_error: str | None = None
        self._lock = threading.Lock()

    def add(self, n: int = 1) -> None:
        with self._lock:
            self.runs += n

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self.failures += 1
            if self.first_error is None:
                self.first_error = f"{type(exc).__name__}: {exc}"

    def evaluate(self, program: Program, prompt: str, example: Any) -> Score:
        """``program.evaluate`` counted; an exception becomes a zero score with feedback."""
        self.add()
        try:
            result = call_blocking(program.evaluate, prompt, example)  # async ones too
        except Exception as exc:
            self.failed(exc)
            return Score(0.0, feedback=f"The program failed: {type(exc).__name__}: {exc}")
        if isinstance(result, Score):
            return result
        if isinstance(result, int | float):
            return Score(float(result))
        raise ScoreTypeError(f"evaluate returned {type(result).__name__}, not a Score or a float.")

    def check(self, peer: str) -> None:
        """Raise when the peer ran the program and every run failed."""
        if self.runs and self.failures == self.runs:
            raise EvaluationError(
                f"{peer}: all {self.runs} runs of the task program failed; the first with "
                f"{self.first_error}. Check that the task model is reachable."
            )


# --------------------------------------------------------------------------- gepa budget
class GEPABudget:
    """Keeps a ``gepa`` run within ``budget`` metric calls (rollouts), exactly or just under.

    gepa checks ``max_metric_calls`` only before an iteration, and an iteration may spend two
    minibatches and a full valset evaluation, so it overshoots. This object is three of gepa's
    extension points at once:

    - a stop callback: stop before an iteration whose worst case does not fit (two minibatches;
      or, when a merge may be tried this iteration, a merge subsample and the valset);
    - an acceptance criterion: gepa's own (strictly better on the minibatch), and refuse a
      child whose valset evaluation the budget cannot pay;
    - a callback: it watches accepted candidates and merges to know when a merge may come.

    ``max_metric_calls`` is exposed so gepa's progress display sees the budget.
    """

    def __init__(
        self,
        budget: int,
        *,
        n_val: int,
        minibatch: int,
        merge: bool,
        max_merges: int,
        merge_subsample: int = 5,
    ) -> None:
        need = n_val + 2 * minibatch
        if budget < need:
            raise ConfigError(
                f"A budget of {budget} rollouts cannot pay the seed's valset evaluation "
                f"({n_val}) and one reflective step (2 x {minibatch}); give at least {need}, "
                "or use fewer validation examples."
            )
        self.budget = budget
        self.max_metric_calls = budget
        self.n_val = n_val
        self.minibatch = minibatch
        self.merge = merge
        self.max_merges = max_merges
        self.merge_subsample = min(merge_subsample, n_val)
        self.refused_full_evals = 0
        self.unspent_at_stop: int | None = None
        self._accepted = False
        self._merged = False
        self._merges = 0
        self._merge_possible = False

    # stop callback
    def __call__(self, state: Any) -> bool:
        """True when the next iteration might cross the budget."""
        remaining = self.budget - int(state.total_num_evals)
        need = 2 * self.minibatch
        if self._merge_possible:
            need = max(need, self.merge_subsample + self.n_val)
        if remaining < need:
            self.unspent_at_stop = remaining
            return True
        return False

    # acceptance criterion
    def should_accept(self, proposal: Any, state: Any) -> bool:
        """Strictly better on the minibatch, and its valset evaluation fits in the budget."""
        before = sum(proposal.subsample_scores_before or [])
        after = sum(proposal.subsample_scores_after or [])
        if after <= before:
            return False
        if int(state.total_num_evals) + self.n_val > self.budget:
            self.refused_full_evals += 1
            return False
        return True

    def reject_reason(self, proposal: Any, state: Any) -> str:
        before = sum(proposal.subsample_scores_before or [])
        after = sum(proposal.subsample_scores_after or [])
        if after <= before:
            return f"New subsample score {after} is not better than old score {before}, skipping"
        return f"Subsample score {before} -> {after}, but the budget cannot pay a valset evaluation"

    # callbacks
    def on_iteration_start(self, event: Any) -> None:
        self._accepted = self._merged = False

    def on_candidate_accepted(self, event: Any) -> None:
        self._accepted = True

    def on_merge_accepted(self, event: Any) -> None:
        self._merged = True
        self._merges += 1

    def on_iteration_end(self, event: Any) -> None:
        # gepa tries a merge only right after an iteration that accepted a reflective child
        self._merge_possible = (
            self.merge and self._accepted and not self._merged and self._merges < self.max_merges
        )


def gepa_curve(
    scores: Sequence[float], discovered_at: Sequence[int], n_val: int
) -> list[tuple[int, float]]:
    """(rollouts, best val score so far) from gepa's per-candidate val scores and the rollouts
    spent when each was found (its valset evaluation, ``n_val`` more, makes its score known)."""
    points: list[tuple[int, float]] = []
    best = float("-inf")
    for at, score in sorted(zip(discovered_at, scores, strict=True), key=lambda p: p[0]):
        if score > best:
            best = float(score)
            points.append((int(at) + n_val, best))
    return points


class Stopwatch:
    """Wall time of a block, in seconds."""

    def __enter__(self) -> Stopwatch:
        self.started = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started
