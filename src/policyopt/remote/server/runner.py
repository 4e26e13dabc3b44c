"""The job runner: turns a stored job config into a GEPA or MIPRO run in its own job directory.

The queue is the store: several runners (server replicas) on one database share it. A free
worker thread claims the oldest ``queued`` job atomically, under a lease (this replica's id,
an expiry) that a heartbeat thread renews; at most ``max_concurrent_jobs`` jobs run here at
once. Each job runs with ``run_dir = <data_dir>/<job_id>``, so its journal makes it
resumable: when a replica dies (even by SIGKILL) its leases expire, any other replica puts the
job back in the queue, and whoever claims it replays the journal (finished rollouts are not
paid again; the data dir must be shared by the replicas). A server restarted on the same host
takes back the leases of its dead predecessor at once. A job that cannot be resumed, or that
has already been interrupted too often, is marked failed with the reason. A replica that
cannot renew its leases stops its jobs before they expire (so two replicas never run one job),
and ends a job only while the lease is its own.

With ``isolation="process"`` (what ``policyopt serve`` uses) each job runs in a child process
(:mod:`policyopt.remote.server.job_process`), so the optimizer's Python work never competes with the
server's request handling for the GIL.

The optimizer's events go to the store as the job's events (one ordered stream per job
whichever replica runs it); cancelling writes the run dir's ``STOP`` file, so the optimizer
stops at its next check and the partial result is kept; a cancel asked of another replica
reaches the job's replica at its next heartbeat. What runs once a job is claimed (config,
task app, optimizer, test split, terminal state) is :mod:`policyopt.remote.server.execution`,
given its inputs explicitly; what a run writes to the store (its events, progress, best and
results) is in :mod:`policyopt.remote.server.job_events`. A job's process
(:mod:`~policyopt.remote.server.job_process`) uses only the runner's public surface
(:meth:`JobRunner.child_process`, :meth:`JobRunner.child_of`, :attr:`JobRunner.stopping`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from policyopt.errors import ConfigError
from policyopt.remote.server.execution import (
    DEFAULT_ROLLOUT_TIMEOUT_S,
    JobInputs,
    ReflectionFactory,
    TaskAppFactory,
    execute,
    job_config,
    record_cancelled,
    task_app_client,
)
from policyopt.remote.server.job_events import EVENT_TYPES, JobListener, build_results, scrub_paths
from policyopt.remote.server.job_lm import default_reflection_lm
from policyopt.remote.server.job_thread import JobCancelled, JobThreads
from policyopt.remote.server.leases import (
    DEFAULT_LEASE_S,
    DEFAULT_POLL_S,
    LeaseHolder,
    new_replica_id,
)
from policyopt.remote.store import TERMINAL_EVENTS, JobRecord, JobState, JobStore

if TYPE_CHECKING:  # pragma: no cover
    from policyopt.remote.config import JobConfig
    from policyopt.remote.server.policy import ServerPolicy
    from policyopt.remote.server.vault import ServerSecret

__all__ = [
    "DEFAULT_LEASE_S",
    "DEFAULT_ROLLOUT_TIMEOUT_S",
    "EVENT_TYPES",
    "JobRunner",
    "ReflectionFactory",
    "TaskAppFactory",
    "build_results",
    "default_reflection_lm",
    "new_replica_id",
    "scrub_paths",
]

logger = logging.getLogger("policyopt")


class JobRunner(LeaseHolder):
    """Runs jobs from the shared queue on a bounded pool of worker threads; see the module
    docstring.

    ``reflection_lm_factory(config)`` and ``task_app_factory(config)`` build a job's
    reflection LM and task-app client (tests inject scripted ones). ``n_jobs`` caps the
    rollouts a job runs in parallel (None: the job's own setting). ``replica_id`` names this
    runner in the leases it holds (default: host, boot id, pid, random); ``lease_s`` is how
    long a lease lasts without a heartbeat (another replica resumes the job after that),
    ``poll_s`` how often a free worker looks at the shared queue.
    """

    def __init__(
        self,
        store: JobStore,
        data_dir: str | Path,
        *,
        max_concurrent_jobs: int = 2,
        reflection_lm_factory: ReflectionFactory | None = None,
        task_app_factory: TaskAppFactory | None = None,
        allow_api_base: bool = False,
        max_attempts: int = 3,
        health_check: bool = True,
        policy: ServerPolicy | None = None,
        secret: ServerSecret | None = None,
        isolation: str = "thread",
        job_niceness: int = 10,
        replica_id: str | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        poll_s: float = DEFAULT_POLL_S,
    ) -> None:
        if isolation not in ("thread", "process"):
            raise ConfigError(f"isolation must be 'thread' or 'process'; got {isolation!r}.")
        if isinstance(max_concurrent_jobs, bool) or max_concurrent_jobs < 1:
            raise ConfigError(
                f"max_concurrent_jobs must be an int >= 1; got {max_concurrent_jobs!r}."
            )
        if not (isinstance(lease_s, (int, float)) and math.isfinite(lease_s) and lease_s >= 1):
            raise ConfigError(f"lease_s (--lease-seconds) must be >= 1 second; got {lease_s!r}.")
        if not (isinstance(poll_s, (int, float)) and 0 < poll_s <= 60):
            raise ConfigError(f"poll_s must be in (0, 60] seconds; got {poll_s!r}.")
        if replica_id is not None and (not replica_id.strip() or len(replica_id) > 200):
            raise ConfigError(
                f"replica_id must be a non-empty name of at most 200 characters; got "
                f"{replica_id!r}."
            )
        from policyopt.remote.server.policy import ServerPolicy
        from policyopt.remote.server.vault import private_dir
        from policyopt.remote.taskapp.outbound import OutboundPolicy

        self.store = store
        self.data_dir = private_dir(data_dir)
        self.data_dir.chmod(0o700)  # run dirs hold journals and results: the server's only
        self.max_concurrent_jobs = max_concurrent_jobs
        self.policy = policy or ServerPolicy(allow_api_base=allow_api_base)
        self.allow_api_base = self.policy.allow_api_base
        self.secret = secret
        self.outbound = OutboundPolicy(self.policy.task_app_hosts)
        self.reflection_lm_factory = reflection_lm_factory or (
            lambda config: default_reflection_lm(config, policy=self.policy)
        )
        self.task_app_factory = task_app_factory or (
            lambda config: task_app_client(config, self.outbound)
        )
        self.max_attempts = max_attempts
        self.health_check = health_check
        self.isolation = isolation
        self.job_niceness = job_niceness  # added to a job process's niceness
        self.factories = (reflection_lm_factory, task_app_factory)  # as given (for children)
        self.children: dict[str, Any] = {}  # job id -> its process (isolation="process")
        self.threads = JobThreads()  # the jobs on this process's threads (isolation="thread")
        self.replica_id = replica_id or new_replica_id()
        self.lease_s = float(lease_s)
        self.poll_s = float(poll_s)
        #: seconds between heartbeats: a third of the lease, at most 2 s (cancel latency)
        self.heartbeat_s = min(self.lease_s / 3.0, 2.0)
        self._wake = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._running: dict[str, Path] = {}
        self._listeners: dict[str, JobListener] = {}
        self._abandoned: set[str] = set()
        self._stop_sent: set[str] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._heartbeat_stop = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None
        self._renewed_at = time.monotonic()
        self._started = False

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> list[str]:
        """Requeue the jobs a dead replica (or a previous server) left, then start the workers
        and the heartbeat. Returns the ids of the jobs requeued."""
        with self._lock:
            if self._started:
                return []
            self._started = True
        requeued = self.recover(startup=True)
        self._renewed_at = time.monotonic()
        self._heartbeat_thread = threading.Thread(
            target=self._beat, name="policyopt-heartbeat", daemon=True
        )
        self._heartbeat_thread.start()
        for n in range(self.max_concurrent_jobs):
            thread = threading.Thread(
                target=self._work, name=f"policyopt-job-{n}", daemon=True
            )  # daemon: a job killed with the process resumes from its journal
            thread.start()
            self._threads.append(thread)
        return requeued

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop taking jobs; running jobs go back to ``queued`` (``job.suspended``).

        Each running job is told to stop at its next check; one that has not stopped within
        ``timeout`` seconds (a slow rollout in flight) is put back in the queue anyway and its
        thread is left to die with the process, its events no longer recorded: the next
        replica to claim it resumes the job from its journal.
        """
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        with self._lock:
            running = list(self._running.values())
        for job_dir in running:
            with contextlib.suppress(OSError):
                (job_dir / "STOP").touch()
        with self._lock:
            children = list(self.children.values())
        for child in children:  # they stop their job at its next check and report back
            with contextlib.suppress(Exception):
                child.terminate()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()
        with self._lock:
            children = list(self.children.values())
        for child in children:  # still running past the deadline: end it now
            with contextlib.suppress(Exception):
                child.kill()
        with self._lock:
            left = list(self._running)
            self._abandoned.update(left)
            for job_id in left:
                listener = self._listeners.get(job_id)
                if listener is not None:
                    listener.detached = True
        for job_id in left:
            job = self.store.get_job(job_id, full=False)
            self.store.transition(
                job_id,
                JobState.QUEUED,
                event="job.suspended",
                message="the server is shutting down; the job resumes on another replica or "
                "on the next start",
                only_from=[JobState.RUNNING],
                holder=self.replica_id,
                attempts=max(0, (job.attempts if job else 1) - 1),  # not a failed attempt
            )
        self._heartbeat_stop.set()
        if self._heartbeat_thread is not None:
            self._heartbeat_thread.join(5.0)

    # ---------------------------------------------------------------- API
    def submit(self, job_id: str) -> None:
        """Queue a pending job (a free worker of any replica claims it)."""
        if self.store.transition(
            job_id,
            JobState.QUEUED,
            event="job.queued",
            message="waiting for a free worker",
            only_from=[JobState.PENDING],
        ):
            with self._wake:
                self._wake.notify()

    def cancel(self, job_id: str, reason: str | None = None) -> JobRecord | None:
        """Cancel a job: at once when it has not started, else at the optimizer's next check
        (a job on another replica: after that replica's next heartbeat)."""
        job = self.store.request_cancel(job_id, reason)
        self.stop_cancelled(job_id)
        return job

    def stop_cancelled(self, job_id: str) -> None:
        """Stop a cancelled job running here: its ``STOP`` file now, and its process interrupted
        at once (Ctrl-C: it keeps its result so far); a process still running a grace period
        later is killed, a thread's job is ended without its thread (see ``job_thread``)."""
        with self._lock:
            job_dir = self._running.get(job_id)
            if job_dir is None:
                return
            self._stop_sent.add(job_id)
        with contextlib.suppress(OSError):
            (job_dir / "STOP").touch()
        if self.isolation == "process":
            from policyopt.remote.server.job_process import kill_after

            kill_after(self, job_id)
        else:
            self.threads.cancel(job_id, lambda: self._give_up(job_id))

    def _give_up(self, job_id: str) -> None:
        """A cancelled job whose thread is stuck in a call past the grace period: it ends
        cancelled now, and what the thread writes after (when its call returns) is ignored."""
        with self._lock:
            if job_id not in self._running or self._stopping.is_set():
                return  # a server shutting down requeues its jobs; its store may be closed
            self._abandoned.add(job_id)
            listener = self._listeners.get(job_id)
            if listener is not None:
                listener.detached = True
        self._cancelled(job_id, None)

    def counts(self) -> dict[str, int]:
        """Jobs running in this replica, and jobs waiting in the shared queue."""
        with self._lock:
            running = len(self._running)
        return {"running": running, "queued": self.store.count_jobs([JobState.QUEUED])}

    # ---------------------------------------------------------------- work
    def _work(self) -> None:
        while not self._stopping.is_set():
            job: JobRecord | None = None
            try:
                if self.store.next_queued() is not None:
                    job = self.store.claim(self.replica_id, self.lease_s)
            except Exception:  # the database is away: try again later
                logger.exception("could not read the job queue")
            if job is None:
                with self._wake:
                    if not self._stopping.is_set():
                        self._wake.wait(self.poll_s)
                continue
            if self._stopping.is_set():  # claimed while shutting down: hand it back
                self.store.transition(
                    job.id,
                    JobState.QUEUED,
                    event="job.suspended",
                    message="the server is shutting down",
                    only_from=[JobState.RUNNING],
                    holder=self.replica_id,
                    attempts=job.attempts - 1,
                )
                return
            try:
                self._execute(job)
            except Exception:  # never lose a worker thread
                logger.exception("job %s: unexpected runner error", job.id)
                with contextlib.suppress(Exception):
                    self._fail(
                        job.id,
                        "internal error in the job runner (see the server log)",
                        holder=self.replica_id,
                    )

    def _config(self, job: JobRecord) -> JobConfig:
        return job_config(job, self.secret)

    def _fail(self, job_id: str, reason: str, **fields: Any) -> None:
        self.store.transition(
            job_id,
            JobState.FAILED,
            event=TERMINAL_EVENTS[JobState.FAILED],
            message=reason,
            data={"status": "failed", "error": reason},
            level="error",
            only_from=[JobState.PENDING, JobState.QUEUED, JobState.RUNNING],
            error=reason,
            **fields,
        )

    def _execute(self, job: JobRecord) -> None:
        """Run a job this replica has just claimed (``running``, under its lease)."""
        job_id = job.id
        job_dir = self.data_dir / job_id
        resumed = (job_dir / "journal.jsonl").exists()
        self.store.append_event(
            job_id,
            "job.started",
            {"resumed": resumed, "attempt": job.attempts, "replica": self.replica_id},
            message="resuming from the journal" if resumed else "started",
        )
        job_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        stop_file = job_dir / "STOP"
        with self._lock:
            self._running[job_id] = job_dir
        try:
            if not self._wait_for_run_dir(job_id, job_dir):
                return  # shutting down or let go while waiting: handed back below or already
            stop_file.unlink(missing_ok=True)  # left by a shutdown or a stale run: this goes on
            if self.store.get_job(job_id, full=False).cancel_requested:  # type: ignore[union-attr]
                stop_file.touch()  # cancelled between the claim and now
            if self.isolation == "process":
                from policyopt.remote.server.job_process import run_in_child

                kind, reason = run_in_child(self, job, job_dir)
            else:
                try:
                    kind, reason = self.threads.run(job_id, lambda: self.outcome(job, job_dir))
                except JobCancelled:  # landed past the run: the job is cancelled all the same
                    kind, reason = "cancelled", ""
            if job_id in self._abandoned:  # handed back already (shutdown or lost lease)
                return
            if kind == "interrupted":
                self.store.transition(
                    job_id,
                    JobState.QUEUED,
                    event="job.suspended",
                    message="the server is shutting down; the job resumes on another replica "
                    "or on the next start",
                    only_from=[JobState.RUNNING],
                    holder=self.replica_id,
                    attempts=job.attempts - 1,  # a clean shutdown is not a failed attempt
                )
            elif kind == "cancelled":  # interrupted before it had a result to keep
                self._cancelled(job_id, None)
            elif kind == "error":
                cancelled = self.store.get_job(job_id, full=False)
                if cancelled is not None and cancelled.cancel_requested:
                    self._cancelled(job_id, None)
                else:
                    self._fail(job_id, reason, holder=self.replica_id)
        finally:
            with self._lock:
                self._running.pop(job_id, None)
                self._listeners.pop(job_id, None)
                self._stop_sent.discard(job_id)
                abandoned = job_id in self._abandoned
                self._abandoned.discard(job_id)
            if not self._stopping.is_set() and not abandoned:
                stop_file.unlink(missing_ok=True)

    def outcome(self, job: JobRecord, job_dir: Path) -> tuple[str, str]:
        """Run a claimed job here (:func:`~policyopt.remote.server.execution.execute`):
        ``("done", "")`` (its end is recorded), ``("interrupted", "")`` (the server is
        stopping) or ``("error", reason)``."""

        def keep(listener: JobListener) -> None:
            with self._lock:
                self._listeners[job.id] = listener

        return execute(
            JobInputs(
                store=self.store,
                job=job,
                job_dir=job_dir,
                policy=self.policy,
                secret=self.secret,
                replica_id=self.replica_id,
                reflection_lm_factory=self.reflection_lm_factory,
                task_app_factory=self.task_app_factory,
                health_check=self.health_check,
                threads=self.threads,
                stopping=self._stopping,
                on_listener=keep,
            )
        )

    def _cancelled(self, job_id: str, results: dict[str, Any] | None) -> None:
        record_cancelled(self.store, job_id, results, self.replica_id)

    # ------------------------------------------------- public surface for job processes
    @property
    def stopping(self) -> bool:
        """True once :meth:`shutdown` has begun."""
        return self._stopping.is_set()

    @contextlib.contextmanager
    def child_process(self, job_id: str, child: Any) -> Iterator[None]:
        """Track ``child`` as the process running ``job_id`` for as long as the block runs
        (:meth:`shutdown` terminates it, :meth:`child_of` finds it)."""
        with self._lock:
            self.children[job_id] = child
        try:
            yield
        finally:
            with self._lock:
                self.children.pop(job_id, None)

    def child_of(self, job_id: str) -> Any | None:
        """The process running ``job_id`` here, or None."""
        with self._lock:
            return self.children.get(job_id)
