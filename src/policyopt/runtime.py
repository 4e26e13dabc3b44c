"""What every optimizer run sets up the same way: run dir, events, engine, splits, stops.

An optimizer builds one :class:`RunContext` per ``optimize`` call and closes it when done.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from policyopt.events import EventBus, JSONLEventLog, Listener
from policyopt.progress import ProgressDisplay
from policyopt.rollout import RolloutEngine
from policyopt.state.rundir import RunDir, fingerprint
from policyopt.stopping import Stopper
from policyopt.types import Program, example_ids

__all__ = ["RunContext", "RunSettings"]

#: settings of every run that may change when a run_dir is resumed (the trajectory is the same)
RESUMABLE = frozenset(
    {
        "max_rollouts",
        "max_time_s",
        "max_cost_usd",
        "n_jobs",
        "backend",
        "progress",
        "run_dir",
        "timeout",
        "max_errors",
    }
)


class RunSettings(BaseModel):
    """The settings every optimizer run has: budget, parallelism, error policy, limits, run dir.

    Optimizers extend it with their own; instances are frozen and unknown names are errors.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_rollouts: int = Field(ge=1, description="hard budget of evaluate() calls")
    seed: int = 0
    n_jobs: int = Field(4, description="rollouts in parallel (-1: all cores)")
    backend: str | None = Field(None, description="joblib backend (None: threads)")
    max_time_s: float | None = Field(None, gt=0)
    max_cost_usd: float | None = Field(None, gt=0, description="cap on the optimizer's LM cost")
    max_errors: int | None = Field(10, ge=0, description="failed rollouts tolerated")
    timeout: float | None = Field(None, gt=0, description="seconds per rollout")
    failure_score: float = 0.0
    progress: bool = True
    run_dir: str | None = None

    @field_validator("n_jobs")
    @classmethod
    def _n_jobs(cls, value: int) -> int:
        if value == 0 or value < -1:
            raise ValueError("must be >= 1, or -1 for all cores")
        return value


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
        self.started = time.perf_counter()
        self.events = EventBus(listeners)
        self.rundir: RunDir | None = None
        self.log: JSONLEventLog | None = None
        if s.run_dir is not None:
            dump = settings.model_dump()
            ident = {k: v for k, v in dump.items() if k not in set(resumable)}
            ident.update(identity)
            ident["train"] = fingerprint(trainset, example_ids(trainset, name="trainset"))
            ident["val"] = (
                None if valset is None else fingerprint(valset, example_ids(valset, name="valset"))
            )
            self.rundir = RunDir(s.run_dir, optimizer=optimizer, identity=ident, settings=dump)
            self.log = JSONLEventLog(self.rundir.events_path)
            self.events.subscribe(self.log)
        self.engine = RolloutEngine(
            program.evaluate,
            max_rollouts=s.max_rollouts,
            n_jobs=s.n_jobs,
            backend=s.backend,
            max_errors=s.max_errors,
            timeout=s.timeout,
            failure_score=s.failure_score,
            events=self.events,
            journal=self.rundir.journal if self.rundir else None,
        )
        self.train_split = "train"
        self.train_ids = self.engine.add_split("train", trainset)
        self.val_split = "train" if valset is None else "val"
        self.val_ids = self.train_ids if valset is None else self.engine.add_split("val", valset)
        self.stopper = Stopper(
            max_time_s=s.max_time_s,
            max_cost_usd=s.max_cost_usd,
            patience=getattr(s, "patience", None),
            stop_file=self.rundir.stop_file if self.rundir else None,
        )
        self.display = ProgressDisplay() if s.progress else None
        if self.display is not None:
            self.events.subscribe(self.display)

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
        if self.display is not None:
            self.display.close()
