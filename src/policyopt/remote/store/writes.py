"""The job store's writes (API keys, jobs, transitions, events): :class:`JobStore`, the whole
store, built on the reads and the leases (see :mod:`policyopt.remote.store`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from policyopt.errors import ConfigError, StateError
from policyopt.remote.store.db import (
    API_KEYS,
    BUMP_SEQ,
    INSERT_EVENT,
    JOBS,
    QUOTA_LOCK,
    READ_SEQ,
    TERMINAL_EVENTS,
    TERMINAL_STATES,
    UPDATABLE,
    JobRecord,
    JobState,
    LeaseState,
    StoredEvent,
    column_value,
    database_url,
    hash_api_key,
    new_job_id,
)
from policyopt.remote.store.leases import Leases

__all__ = [
    "TERMINAL_EVENTS",
    "TERMINAL_STATES",
    "JobRecord",
    "JobState",
    "JobStore",
    "LeaseState",
    "StoredEvent",
    "database_url",
    "hash_api_key",
    "new_job_id",
]


class JobStore(Leases):
    """Jobs, events, key owners and leases in SQLite or PostgreSQL; every method is
    thread-safe, and several processes (replicas) may share one database."""

    # ---------------------------------------------------------------- API keys
    def set_api_keys(self, keys: Mapping[str, str]) -> None:
        """Make exactly these owners active: ``{owner_id: label}``; others are deactivated."""
        now = time.time()
        with self._write() as db:
            db.execute(sa.update(API_KEYS).values(active=0))
            for owner, label in keys.items():
                done = db.execute(
                    sa.update(API_KEYS)
                    .where(API_KEYS.c.owner == owner)
                    .values(active=1, label=label)
                ).rowcount
                if not done:
                    db.execute(
                        sa.insert(API_KEYS).values(
                            owner=owner, label=label, active=1, created_at=now
                        )
                    )

    def rename_owner(self, old: str, new: str) -> int:
        """Give ``old``'s jobs to ``new`` (an owner-id scheme change); returns how many."""
        with self._write() as db:
            moved = db.execute(
                sa.update(JOBS).where(JOBS.c.owner == old).values(owner=new)
            ).rowcount
            db.execute(sa.delete(API_KEYS).where(API_KEYS.c.owner == old))
        return int(moved)

    # ---------------------------------------------------------------- jobs
    def create_job(
        self,
        *,
        owner: str,
        algorithm: str,
        config: Mapping[str, Any],
        job_id: str | None = None,
        max_rollouts: int | None = None,
        reserved: Mapping[str, Any] | None = None,
        admit: Callable[[Mapping[str, float]], None] | None = None,
    ) -> JobRecord:
        """Insert a new job in state ``pending`` with its ``job.created`` event (seq 1).

        ``admit(usage)``, when given, is called with what the owner's jobs hold of its quotas
        (:meth:`usage_on`) inside the insert's own transaction, one such transaction per owner
        at a time on every replica (SQLite: the database's write lock, ``BEGIN IMMEDIATE``;
        PostgreSQL: an advisory lock on the owner), so no two submits, on any replica, both
        fit into the same room; it raises to refuse the job, and nothing is written.
        ``reserved`` is what the job holds of the quotas besides its budget (``lm_calls``).
        """
        job_id = job_id or new_job_id()
        now = time.time()
        progress = {"rollouts_used": 0, "max_rollouts": max_rollouts}
        with self._write() as db:
            if admit is not None:
                if self.dialect == "postgresql":
                    db.execute(
                        sa.select(
                            sa.func.pg_advisory_xact_lock(QUOTA_LOCK, sa.func.hashtext(owner))
                        )
                    )
                admit(self.usage_on(db, owner))
            db.execute(
                sa.insert(JOBS).values(
                    id=job_id,
                    owner=owner,
                    algorithm=algorithm,
                    status=JobState.PENDING.value,
                    config=dict(config),
                    created_at=now,
                    progress=progress,
                    reserved=dict(reserved) if reserved else None,
                )
            )
            self._append(db, job_id, "job.created", "job created", {"algorithm": algorithm}, now)
        job = self.get_job(job_id)
        assert job is not None
        return job

    def update_job(self, job_id: str, **fields: Any) -> None:
        """Set some columns of a job (JSON columns take Python values)."""
        unknown = set(fields) - UPDATABLE
        if unknown:
            raise ConfigError(f"Cannot update job columns {sorted(unknown)}.")
        if not fields:
            return
        values = {name: column_value(name, value) for name, value in fields.items()}
        with self._write() as db:
            db.execute(sa.update(JOBS).where(JOBS.c.id == job_id).values(**values))

    def transition(
        self,
        job_id: str,
        status: JobState,
        *,
        event: str | None = None,
        message: str = "",
        data: Mapping[str, Any] | None = None,
        level: str = "info",
        only_from: Sequence[JobState] | None = None,
        holder: str | None = None,
        expired_before: float | None = None,
        **fields: Any,
    ) -> bool:
        """Change a job's state (and columns), with its event, atomically.

        Guards (nothing happens and False is returned unless they all hold): ``only_from``,
        the job is in one of those states (a cancelled job cannot be marked succeeded by a
        runner that finished late); ``holder``, the job's lease is this replica's (a replica
        that lost its lease cannot end a job another one resumed); ``expired_before``, the
        lease is missing or expired before that time (two replicas never both requeue a job).
        Leaving ``running`` drops the lease.
        """
        now = time.time()
        for name in fields:
            if name not in UPDATABLE:
                raise ConfigError(f"Cannot update job column {name!r}.")
        with self._write() as db:
            row = db.execute(
                sa.select(JOBS.c.status, JOBS.c.lease_owner, JOBS.c.lease_expires_at)
                .where(JOBS.c.id == job_id)
                .with_for_update()
            ).first()
            if row is None:
                raise StateError(f"No job {job_id!r}.")
            if only_from is not None and JobState(row.status) not in set(only_from):
                return False
            if holder is not None and row.lease_owner != holder:
                return False
            if expired_before is not None and (
                row.lease_expires_at is not None and row.lease_expires_at >= expired_before
            ):
                return False
            columns: dict[str, Any] = {"status": status.value}
            if status.terminal:
                columns["finished_at"] = now
            if status is not JobState.RUNNING:
                columns.update(lease_owner=None, lease_expires_at=None)
            for name, value in fields.items():
                columns[name] = column_value(name, value)
            db.execute(sa.update(JOBS).where(JOBS.c.id == job_id).values(**columns))
            if event is not None:
                self._append(db, job_id, event, message, dict(data or {}), now, level)
        return True

    def request_cancel(self, job_id: str, reason: str | None) -> JobRecord | None:
        """Mark a job for cancellation; a job that has not started is cancelled at once.

        Returns the job after the change (None when it does not exist). A running job's
        replica, whichever it is, learns of it at its next heartbeat.
        """
        now = time.time()
        with self._write() as db:
            row = db.execute(
                sa.select(JOBS.c.status).where(JOBS.c.id == job_id).with_for_update()
            ).first()
            if row is None:
                return None
            state = JobState(row.status)
            if not state.terminal:
                db.execute(
                    sa.update(JOBS)
                    .where(JOBS.c.id == job_id)
                    .values(cancel_requested=1, cancel_reason=reason)
                )
                self._append(
                    db, job_id, "job.cancel_requested", reason or "cancel requested", {}, now
                )
                if state in (JobState.PENDING, JobState.QUEUED):
                    db.execute(
                        sa.update(JOBS)
                        .where(JOBS.c.id == job_id)
                        .values(status=JobState.CANCELLED.value, finished_at=now)
                    )
                    self._append(
                        db,
                        job_id,
                        TERMINAL_EVENTS[JobState.CANCELLED],
                        reason or "cancelled before it started",
                        {"status": JobState.CANCELLED.value, "reason": reason},
                        now,
                    )
        return self.get_job(job_id)

    # ---------------------------------------------------------------- events
    def _append(
        self,
        db: sa.Connection,
        job_id: str,
        type_: str,
        message: str,
        data: Mapping[str, Any],
        ts: float,
        level: str = "info",
    ) -> int:
        # an atomic increment: on PostgreSQL the row stays locked until this transaction ends
        done = db.execute(BUMP_SEQ, {"job_id": job_id}).rowcount
        if not done:
            raise StateError(f"No job {job_id!r}.")
        seq = int(db.execute(READ_SEQ, {"job_id": job_id}).scalar_one())
        db.execute(
            INSERT_EVENT,
            {
                "job_id": job_id,
                "seq": seq,
                "type": type_,
                "ts": ts,
                "level": level,
                "message": message,
                "data": dict(data),
            },
        )
        return seq

    def append_event(
        self,
        job_id: str,
        type_: str,
        data: Mapping[str, Any] | None = None,
        *,
        message: str = "",
        level: str = "info",
    ) -> int:
        """Append one event; returns its ``seq`` (the job's previous seq + 1)."""
        with self._write() as db:
            return self._append(db, job_id, type_, message, dict(data or {}), time.time(), level)
