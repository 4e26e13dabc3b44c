"""Leases of server replicas on jobs: who runs a job, until when, and what happens when it dies.

Several job runners (server replicas) share one store. A runner holds each job it runs under a
lease (its replica id, an expiry ``lease_s`` ahead) that its heartbeat thread renews every
``heartbeat_s``. The same thread puts back in the queue the jobs whose lease expired (their
replica died; the next claimer resumes them from the journal), passes a cancel asked of any
replica on to the job, and stops a job here whose lease this replica can no longer renew or
has lost, so that two replicas never both run one job (the run dir's lock keeps one writer per
journal even then). The pattern of Optuna's heartbeat and failed-trial retry.

:class:`LeaseHolder` is a part of :class:`policyopt.remote.server.runner.JobRunner`, kept apart by
concept; it uses the runner's store, locks and bookkeeping.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from policyopt.remote.store import TERMINAL_EVENTS, JobRecord, JobState, JobStore, LeaseState
from policyopt.state.journal import Journal

if TYPE_CHECKING:  # pragma: no cover
    from policyopt.remote.config import JobConfig

__all__ = ["DEFAULT_LEASE_S", "DEFAULT_POLL_S", "LeaseHolder", "new_replica_id"]

logger = logging.getLogger("policyopt")

#: seconds a job's lease lasts without a heartbeat (another replica resumes it after that)
DEFAULT_LEASE_S = 30.0
#: seconds between a free worker's looks at the shared queue (a local submit wakes it at once)
DEFAULT_POLL_S = 0.5


def _host_tag() -> str:
    """This host as a replica id starts: its name and boot id (two hosts with one name differ)."""
    boot = ""
    with contextlib.suppress(OSError):
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    return f"{socket.gethostname()}/{boot or '-'}"


def new_replica_id() -> str:
    """A replica id, unique per process: ``host/boot-id/pid/random``."""
    return f"{_host_tag()}/{os.getpid()}/{secrets.token_hex(3)}"


def _dead_here(holder: str | None, mine: str) -> bool:
    """True when ``holder`` is a replica that was on this host and whose process is gone (so
    its leases need not be waited out); never for another host or a live process."""
    if not holder or holder == mine:
        return False
    parts = holder.split("/")
    if len(parts) != 4 or "/".join(parts[:2]) != _host_tag():
        return False
    try:
        pid = int(parts[2])
    except ValueError:
        return False
    if pid == os.getpid():
        # another runner in this process, or an earlier process with this pid (a restarted
        # container): no way to tell, so its leases are waited out
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


class LeaseHolder:
    """The lease side of a job runner: recovery of dead replicas' jobs, the heartbeat, letting
    a job go, waiting for a stale run's run dir, handing a claimed job back."""

    # set by JobRunner.__init__
    store: JobStore
    data_dir: Path
    replica_id: str
    lease_s: float
    heartbeat_s: float
    max_attempts: int
    children: dict[str, Any]
    _wake: threading.Condition
    _running: dict[str, Path]
    _listeners: dict[str, Any]
    _abandoned: set[str]
    _stop_sent: set[str]
    _lock: threading.Lock
    _stopping: threading.Event
    _heartbeat_stop: threading.Event
    _renewed_at: float

    if TYPE_CHECKING:  # pragma: no cover - JobRunner's

        def _config(self, job: JobRecord) -> JobConfig: ...

        def _fail(self, job_id: str, reason: str, **fields: Any) -> None: ...

        def stop_cancelled(self, job_id: str) -> None: ...

    def recover(self, *, startup: bool = False) -> list[str]:
        """Requeue running jobs whose lease expired (their replica died), or fail or cancel
        them with the reason; returns the ids requeued.

        With ``startup``, also the jobs a dead process on this host held (a restarted server
        need not wait out its predecessor's leases) and jobs left ``pending`` (a server that
        died between storing a job and queueing it).
        """
        now = time.time()
        requeued: list[str] = []
        if startup:
            running = self.store.list_jobs(
                states=[JobState.RUNNING, JobState.PENDING], limit=1_000_000, full=False
            )
            for job in sorted(running, key=lambda j: j.created_at):
                if job.status is JobState.PENDING:
                    self.store.transition(
                        job.id,
                        JobState.QUEUED,
                        event="job.queued",
                        message="queued after a server restart",
                        only_from=[JobState.PENDING],
                    )
                elif _dead_here(job.lease_owner, self.replica_id) and self._reclaim(
                    job, "its server process is gone", holder=job.lease_owner
                ):
                    requeued.append(job.id)
        for job in self.store.expired(now):
            why = (
                f"the lease of replica {job.lease_owner} expired"
                if job.lease_owner
                else "its server stopped"
            )
            if self._reclaim(job, why, expired_before=now):
                requeued.append(job.id)
        if requeued:
            with self._wake:
                self._wake.notify_all()
        return requeued

    def _reclaim(self, job: JobRecord, why: str, **guard: Any) -> bool:
        """Put a job whose replica is gone back in the queue (True), or end it: cancelled when
        that was asked, failed when interrupted too often or no longer valid. ``guard`` is
        :meth:`JobStore.transition`'s ``holder`` or ``expired_before``: only one replica acts."""
        full = self.store.get_job(job.id)
        if full is None or full.status is not JobState.RUNNING:
            return False
        if full.cancel_requested:
            self.store.transition(
                job.id,
                JobState.CANCELLED,
                event=TERMINAL_EVENTS[JobState.CANCELLED],
                message="cancelled (the server stopped before the job could end cleanly)",
                data={"status": "cancelled", "reason": full.cancel_reason},
                only_from=[JobState.RUNNING],
                **guard,
            )
            return False
        if full.attempts >= self.max_attempts:
            self._fail(
                job.id,
                f"the job was interrupted {full.attempts} times (the server stopped while it "
                f"ran); giving up after max_attempts={self.max_attempts}. Its run directory "
                "keeps the journal.",
                **guard,
            )
            return False
        try:
            self._config(full)
        except Exception as exc:
            self._fail(job.id, f"cannot resume: the stored config is invalid: {exc}", **guard)
            return False
        paid = _count_rollouts(self.data_dir / job.id / "journal.jsonl")
        return self.store.transition(
            job.id,
            JobState.QUEUED,
            event="job.requeued",
            message=f"requeued: {why} ({paid} rollouts in the journal)",
            data={
                "previous_status": JobState.RUNNING.value,
                "previous_replica": full.lease_owner,
                "journaled_rollouts": paid,
                "by_replica": self.replica_id,
            },
            only_from=[JobState.RUNNING],
            **guard,
        )

    # ---------------------------------------------------------------- heartbeat
    def _beat(self) -> None:
        """Renew this replica's leases, pass cancels on, fence lost jobs, reap dead replicas."""
        while not self._heartbeat_stop.wait(self.heartbeat_s):
            try:
                self.heartbeat()
            except Exception:
                logger.exception("heartbeat failed (the job database may be unreachable)")
            if time.monotonic() - self._renewed_at > self.lease_s - self.heartbeat_s:
                # leases about to expire unrenewed: stop before another replica resumes them
                with self._lock:
                    mine = list(self._running)
                for job_id in mine:
                    self._let_go(job_id, "its lease could not be renewed", lost=False)
            if self._stopping.is_set():
                continue
            try:
                self.recover()
            except Exception:
                logger.exception("could not requeue the jobs of dead replicas")

    def heartbeat(self) -> list[LeaseState]:
        """One heartbeat: renew the leases of the jobs running here and act on what changed
        (a cancel asked on any replica; a lease lost to another replica)."""
        with self._lock:
            mine = list(self._running)
        states = self.store.heartbeat(self.replica_id, mine, self.lease_s)
        self._renewed_at = time.monotonic()
        for state in states:
            if state.status is not None and state.status.terminal:
                continue  # ending here right now
            if not state.held:
                self._let_go(state.job_id, "its lease went to another replica", lost=True)
            elif state.cancel_requested and state.job_id not in self._stop_sent:
                self.stop_cancelled(state.job_id)
        return states

    def _let_go(self, job_id: str, why: str, *, lost: bool) -> None:
        """Stop running a job here without recording its end (another replica resumes it).
        Its process is killed at once; a job thread is told to stop through the run dir's
        STOP file (safe even when the job is already another replica's: that one waits for
        this run to release the run dir before it starts, and clears the file then)."""
        with self._lock:
            if job_id in self._abandoned or job_id not in self._running:
                return
            self._abandoned.add(job_id)
            listener = self._listeners.get(job_id)
            if listener is not None:
                listener.detached = True
            child = self.children.get(job_id)
            job_dir = self._running[job_id]
        logger.warning("job %s: stopped here: %s", job_id, why)
        if child is not None:
            with contextlib.suppress(Exception):
                child.kill()
        else:
            with contextlib.suppress(OSError):
                (job_dir / "STOP").touch()

    def _wait_for_run_dir(self, job_id: str, job_dir: Path) -> bool:
        """Wait while another run (a replica that lost this job's lease and is still stopping)
        holds the run dir's lock: two writers of one journal would pay rollouts twice. True
        once it is free; False when this replica stops or lets the job go meanwhile."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on Windows
            return True
        said = False
        while True:
            with (job_dir / ".lock").open("a+", encoding="utf-8") as handle:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    pass
                else:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
                    return True
            if not said:
                said = True
                self.store.append_event(
                    job_id,
                    "job.waiting",
                    {"replica": self.replica_id},
                    message="the run dir is still locked by a run that lost this job; waiting "
                    "for it to stop",
                )
            if self._stopping.wait(0.5):
                self._handback(job_id)
                return False
            if job_id in self._abandoned:
                return False

    def _handback(self, job_id: str) -> None:
        """Put a job claimed here back in the queue unrun (not a failed attempt)."""
        job = self.store.get_job(job_id, full=False)
        with self._lock:
            self._abandoned.add(job_id)
        self.store.transition(
            job_id,
            JobState.QUEUED,
            event="job.suspended",
            message="the server is shutting down; the job resumes on another replica or on "
            "the next start",
            only_from=[JobState.RUNNING],
            holder=self.replica_id,
            attempts=max(0, (job.attempts if job else 1) - 1),
        )


def _count_rollouts(journal: Path) -> int:
    """Finished rollouts in a job's journal, read by the run dir's one journal reader (a torn
    last record is not one; a damaged line is skipped with a warning, not fatal here)."""
    records = Journal(journal).iter_records(skip_damaged=True)
    return sum(1 for record in records if record.get("type") == "rollout")
