"""Executing one claimed job, from its stored config to its terminal state, with every input
explicit (:class:`JobInputs`).

The runner (:mod:`policyopt.remote.server.runner`) decides which job runs where (the shared
queue, leases, a worker thread or the job's own process); this module is what then runs, the
same in a thread and in a child process: it unseals and checks the config, checks the task
app's health, builds the optimizer from the registry with the job's reflection LM, runs it in
``run_dir = job_dir`` (so a resumed job replays its journal), scores the seed and the best prompt
on the test ids, and records the job succeeded or cancelled. What a run writes to the store on
the way (events, progress, best, results) is in :mod:`policyopt.remote.server.job_events`.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from policyopt.errors import ConfigError
from policyopt.remote.server.job_events import JobListener, build_results, failure_reason
from policyopt.remote.server.job_thread import JobThreads
from policyopt.remote.store import TERMINAL_EVENTS, JobRecord, JobState, JobStore

if TYPE_CHECKING:  # pragma: no cover
    from policyopt.remote.config import JobConfig
    from policyopt.remote.server.policy import ServerPolicy
    from policyopt.remote.server.vault import ServerSecret
    from policyopt.remote.taskapp.outbound import OutboundPolicy
    from policyopt.types import OptimizationResult, Program

__all__ = [
    "DEFAULT_ROLLOUT_TIMEOUT_S",
    "Interrupted",
    "JobInputs",
    "ReflectionFactory",
    "TaskAppFactory",
    "execute",
    "job_config",
    "record_cancelled",
    "task_app_client",
]

#: HTTP timeout of one rollout when the job sets no per-rollout ``timeout``
DEFAULT_ROLLOUT_TIMEOUT_S = 120.0

ReflectionFactory = Callable[["JobConfig"], Any]
TaskAppFactory = Callable[["JobConfig"], Any]


class Interrupted(Exception):
    """The server is shutting down: the job goes back to the queue (resumed on next start)."""


@dataclass(frozen=True)
class JobInputs:
    """Everything the execution of one job reads or reports to.

    ``stopping`` is the server's shutdown flag (a run that ends after it is handed back, not
    recorded), ``threads`` makes the run interruptible when the job is cancelled in thread
    mode, and ``on_listener`` receives the job's event listener as soon as it exists (the runner
    detaches it when it stops waiting for the run).
    """

    store: JobStore
    job: JobRecord
    job_dir: Path
    policy: ServerPolicy
    secret: ServerSecret | None
    replica_id: str
    reflection_lm_factory: ReflectionFactory
    task_app_factory: TaskAppFactory
    health_check: bool
    threads: JobThreads
    stopping: threading.Event
    on_listener: Callable[[JobListener], None]


def task_app_client(config: JobConfig, outbound: OutboundPolicy | None) -> Any:
    """The job's task-app client: async, so its rollouts are coroutines on the engine's loop
    (``n_jobs`` in flight, no thread each), with as many connections as rollouts in flight."""
    from policyopt.remote.taskapp.client import AsyncTaskAppClient

    # never api_key_env: the server does not read its own environment for a request.
    # A rollout may take long (a slow model, a busy machine): the HTTP timeout follows the
    # job's per-rollout timeout, else a generous default, so slow is not mistaken for down.
    kwargs = config.optimizer_kwargs()
    timeout = kwargs.get("timeout") or DEFAULT_ROLLOUT_TIMEOUT_S
    return AsyncTaskAppClient(
        config.task_app.url,
        config.task_app.api_key,
        timeout=float(timeout),
        max_concurrency=max(8, int(kwargs.get("n_jobs") or 0)),
        outbound=outbound,
    )


def job_config(job: JobRecord, secret: ServerSecret | None) -> JobConfig:
    """The job's config as submitted: its stored form unsealed (task-app key included)."""
    from policyopt.remote.config import JobConfig

    stored = job.config if secret is None else secret.unseal_config(job.config)
    return JobConfig.from_dict(stored)


def execute(inputs: JobInputs) -> tuple[str, str]:
    """Run the job: ``("done", "")`` (its end is recorded), ``("interrupted", "")`` (the server
    is stopping) or ``("error", reason)``."""
    try:
        _run(inputs)
    except Interrupted:
        return "interrupted", ""
    except Exception as exc:
        return "error", failure_reason(exc)
    return "done", ""


def record_cancelled(
    store: JobStore, job_id: str, results: dict[str, Any] | None, holder: str
) -> None:
    """End a running job cancelled, keeping ``results`` (its partial result) when there are any."""
    job = store.get_job(job_id)
    reason = job.cancel_reason if job is not None else None
    fields: dict[str, Any] = {}
    if results is not None:
        fields.update(
            results=results,
            best_score=results.get("best_score"),
            best_prompt=results.get("best_prompt"),
        )
    store.transition(
        job_id,
        JobState.CANCELLED,
        event=TERMINAL_EVENTS[JobState.CANCELLED],
        message=reason or "cancelled",
        data={"status": "cancelled", "reason": reason, "partial_results": results is not None},
        only_from=[JobState.RUNNING],
        holder=holder,
        **fields,
    )


def _run(inputs: JobInputs) -> None:
    job, store = inputs.job, inputs.store
    config = job_config(job, inputs.secret)
    # checked again here: a config stored under an older, looser policy is refused too
    inputs.policy.check_ids(config)
    inputs.policy.check_settings(config)
    kwargs = dict(config.optimizer_kwargs())
    if kwargs.get("max_rollouts") is None:
        raise ConfigError("budget.max_rollouts is required for a job (a hard rollout cap).")
    kwargs.update(run_dir=str(inputs.job_dir), progress=False)
    from policyopt.rollout.aio import call_blocking

    client = inputs.task_app_factory(config)
    try:
        if inputs.health_check:
            try:
                call_blocking(client.health)  # async client: awaited on the engine's loop
            except Exception as exc:
                raise ConfigError(
                    f"the task app at {config.task_app.url} is not healthy: {exc}"
                ) from exc
        program = client.program(config.initial_prompt, config.policy())
        listener = JobListener(store, job, program.prompt)
        inputs.on_listener(listener)
        lm = inputs.reflection_lm_factory(config)
        train = [{"id": i} for i in config.train_ids]
        val = [{"id": i} for i in config.val_ids] if config.val_ids else None
        from policyopt.registry import get_spec

        optimizer = get_spec(config.algorithm).build(lm=lm, listeners=[listener], **kwargs)
        with inputs.threads.interruptible(job.id):  # not entered once cancelled (thread mode)
            result = optimizer.optimize(program, train, val)
        if inputs.stopping.is_set():
            raise Interrupted
        current = store.get_job(job.id)
        if current is not None and current.cancel_requested:
            partial = build_results(store, job.id, result, None)
            record_cancelled(store, job.id, partial, inputs.replica_id)
            return
        test = _test(inputs, program, result, config, kwargs)
        results = build_results(store, job.id, result, test)
    finally:
        with contextlib.suppress(Exception):
            client.close()
    if inputs.stopping.is_set():
        raise Interrupted
    current = store.get_job(job.id)
    if current is not None and current.cancel_requested:  # asked while the test ran
        record_cancelled(store, job.id, results, inputs.replica_id)
        return
    store.transition(
        job.id,
        JobState.SUCCEEDED,
        event=TERMINAL_EVENTS[JobState.SUCCEEDED],
        message=f"best validation score {result.best_score:.4f} ({result.stop_reason})",
        data={
            "status": "succeeded",
            "best_score": results["best_score"],
            "best_prompt": results["best_prompt"],
            "stop_reason": result.stop_reason,
            "n_rollouts": result.n_rollouts,
            "test": test,
        },
        only_from=[JobState.RUNNING],
        holder=inputs.replica_id,
        results=results,
        best_score=results["best_score"],
        best_prompt=results["best_prompt"],
        progress={"rollouts_used": result.n_rollouts, "max_rollouts": result.max_rollouts},
    )


def _test(
    inputs: JobInputs,
    program: Program,
    result: OptimizationResult,
    config: JobConfig,
    kwargs: Mapping[str, Any],
) -> dict[str, Any] | None:
    """Scores of the seed and the best prompt on the test ids (journaled, so not re-paid)."""
    if not config.test_ids:
        return None
    from policyopt.rollout import RolloutEngine
    from policyopt.state.journal import Journal

    job_id = inputs.job.id
    journal = Journal(inputs.job_dir / "test_journal.jsonl")
    prompts = {"seed": program.prompt, "best": result.best_prompt}
    out: dict[str, Any] = {"n_examples": len(config.test_ids)}
    try:  # not entered once cancelled (thread mode); the journal is closed whatever happens
        with (
            inputs.threads.interruptible(job_id),
            RolloutEngine(
                program.evaluate,
                n_jobs=int(kwargs.get("n_jobs", 4)),
                max_errors=kwargs.get("max_errors", 10),
                timeout=kwargs.get("timeout"),
                journal=journal,
            ) as engine,
        ):
            ids = engine.add_split("test", [{"id": i} for i in config.test_ids])
            for label, prompt in prompts.items():
                scores = engine.run([(prompt, i) for i in ids], split="test", label=label).scores()
                out[label] = math.fsum(scores) / len(scores)
                inputs.store.append_event(
                    job_id,
                    "test.evaluated",
                    {"prompt": label, "score": out[label], "n_examples": len(scores)},
                    message=f"{label} prompt scores {out[label]:.4f} on the test ids",
                )
            out["rollouts"] = engine.rollouts_spent
    finally:
        journal.close()
    return out
