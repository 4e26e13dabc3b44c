"""Progress display: an event listener showing rollouts used of the budget, best score, failed
rollouts (count and last reason) and time left.

The time-left estimate is shown only once the run has a rate worth extrapolating (a few batches
done and a few percent of the budget spent): the first batches are the seed evaluation and a cold
model, and an estimate from them read "~3849s left" on a run that took 100 s.

On a terminal or in a notebook it draws a live rich progress bar on stderr; elsewhere (CI logs,
files) it writes one plain line every ``interval`` seconds instead of redrawing. It never touches
stdout and never changes what the run does.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from policyopt.events import (
    BatchDone,
    Event,
    NewBest,
    RolloutsProgress,
    RunFinished,
    RunStarted,
)

__all__ = ["ProgressDisplay", "describe_estimate"]


def _spread(est: dict[str, Any], key: str) -> str:
    """`` (lo-hi)`` when the estimate gives a range for ``key``."""
    lo, hi = est.get(f"{key}_min", est.get(key)), est.get(f"{key}_max", est.get(key))
    return f" ({lo}-{hi})" if lo != hi else ""


def describe_estimate(event: RunStarted) -> str:
    """One line saying what a run's settings imply, printed before it starts."""
    est = event.estimate
    parts = [f"{event.optimizer}: budget {event.max_rollouts} rollouts"]
    if "seed_evaluation" in est:
        parts.append(f"seed scored on {est['seed_evaluation']} val examples")
    if "iterations" in est:
        per = est.get("proposals_per_iteration", 1)
        parts.append(f"~{est['iterations']} iterations x {per} proposals")
    if "reflection_calls" in est:
        spread = _spread(est, "reflection_calls")
        parts.append(f"~{est['reflection_calls']} reflection LM calls{spread}")
    if "num_trials" in est:
        plan = f" (plan: {est['plan']})" if "plan" in est else ""
        batch = f" on minibatches of {est['minibatch_size']}" if "minibatch_size" in est else ""
        parts.append(f"{est['num_candidates']} candidates, {est['num_trials']} trials{batch}{plan}")
    if "total" in est:
        parts.append(f"at most ~{est['total']} rollouts by the settings")
    if "proposer_calls" in est:
        parts.append(f"~{est['proposer_calls']} proposer LM calls{_spread(est, 'proposer_calls')}")
    if event.resumed_rollouts:
        parts.append(f"resuming with {event.resumed_rollouts} rollouts already paid")
    return ", ".join(parts)


class ProgressDisplay:
    """Listener: ``events.subscribe(ProgressDisplay())``; call :meth:`close` when done."""

    def __init__(
        self,
        *,
        stream: IO[str] | None = None,
        live: bool | None = None,
        interval: float = 10.0,
        label: str = "rollouts",
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.label = label
        self.total: int | None = None
        self.used = 0
        self.best: float | None = None
        self.started = time.monotonic()
        self._base = 0  # rollouts already paid when this display started (resumed runs)
        self.batches = 0  # batches finished since the display started
        self.failed = 0  # failed rollouts seen
        self.last_error: str | None = None
        self._last_line = 0.0
        self._progress: Any = None
        self._task: Any = None
        self._live = live if live is not None else self._is_interactive()

    def _is_interactive(self) -> bool:
        try:
            from rich.console import Console

            console = Console(file=self.stream)
            if console.is_jupyter:  # rich draws there through ipywidgets, or warns without it
                import importlib.util

                return importlib.util.find_spec("ipywidgets") is not None
            return bool(console.is_terminal)
        except Exception:
            return False

    # ------------------------------------------------------------------ listener
    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.total = event.max_rollouts
            self._base = event.resumed_rollouts
            self.used = event.resumed_rollouts
            self.started = time.monotonic()
            self.batches = 0
            if event.estimate:
                print(f"[policyopt] {describe_estimate(event)}", file=self.stream, flush=True)
        elif isinstance(event, (BatchDone, RolloutsProgress)):
            self.used = event.rollouts_used
            if isinstance(event, BatchDone):
                self.batches += 1
                self.failed += event.n_failed
                self.last_error = event.last_error or self.last_error
            if self.total is None:
                self.total = event.max_rollouts
        elif isinstance(event, NewBest):
            self.best = event.score
        elif isinstance(event, RunFinished):
            self.used = event.n_rollouts
            self.best = event.best_score
            self._update(final=True)
            self.close()
            return
        else:
            return
        self._update()

    # ------------------------------------------------------------------ drawing
    #: the estimate waits for this many finished batches and this share of the budget
    ETA_MIN_BATCHES = 3
    ETA_MIN_FRACTION = 0.05

    def eta_seconds(self) -> float | None:
        """Seconds left at the current rate; None until the rate means something (a few
        batches done and a few percent of the budget spent) or without a budget."""
        done = self.used - self._base
        if self.total is None or done <= 0 or self.batches < self.ETA_MIN_BATCHES:
            return None
        if done < self.ETA_MIN_FRACTION * max(1, self.total - self._base):
            return None
        rate = done / max(time.monotonic() - self.started, 1e-9)
        return max(0.0, (self.total - self.used) / rate)

    def failures(self) -> str:
        """``", 3 failed (last: ValueError: ...)"``, or "" when nothing failed."""
        if not self.failed:
            return ""
        reason = (self.last_error or "").splitlines()[0] if self.last_error else ""
        if len(reason) > 100:
            reason = reason[:97] + "..."
        return f", {self.failed} failed" + (f" (last: {reason})" if reason else "")

    def summary(self) -> str:
        """One line: rollouts used of the budget, best score, failures, elapsed and time left."""
        budget = f"/{self.total}" if self.total is not None else ""
        best = f", best {self.best:.3f}" if self.best is not None else ""
        eta = self.eta_seconds()
        left = f", ~{eta:.0f}s left" if eta is not None and self.used < (self.total or 0) else ""
        elapsed = time.monotonic() - self.started
        return (
            f"{self.used}{budget} {self.label}{best}{self.failures()}, {elapsed:.0f}s elapsed{left}"
        )

    def _update(self, final: bool = False) -> None:
        if not self._live:
            now = time.monotonic()
            if final or now - self._last_line >= self.interval:
                self._last_line = now
                print(f"[policyopt] {self.summary()}", file=self.stream, flush=True)
            return
        if self._progress is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            # no TimeRemainingColumn: its estimate is as wild as ours early on; ours waits
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(self.label),
                TextColumn("{task.fields[best]}"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[left]}"),
                TextColumn("{task.fields[failed]}", markup=False),
                console=Console(file=self.stream),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "policyopt", total=self.total, best="", left="", failed=""
            )
        best = f"best {self.best:.3f}" if self.best is not None else ""
        eta = self.eta_seconds()
        left = f"~{eta:.0f}s left" if eta is not None and not final else ""
        self._progress.update(
            self._task,
            completed=self.used,
            total=self.total,
            best=best,
            left=left,
            failed=self.failures().lstrip(", "),
        )

    def close(self) -> None:
        """Stop drawing (idempotent)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
