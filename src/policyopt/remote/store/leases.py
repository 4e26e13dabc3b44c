"""The job store's queue and leases: claim the oldest queued job, renew leases, find expired ones.

One layer of :class:`~policyopt.remote.store.JobStore`; a running job is held under a lease its
replica renews (:meth:`Leases.heartbeat`), and a job whose lease expired is found by any replica
(:meth:`Leases.expired`) and requeued through ``JobStore.transition(..., expired_before=...)``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import sqlalchemy as sa

from policyopt.remote.store.db import JOBS, JobRecord, JobState, LeaseState, row_to_job
from policyopt.remote.store.reads import Reads

__all__ = ["Leases"]


class Leases(Reads):
    """The queue and the leases of running jobs."""

    def next_queued(self) -> str | None:
        """The oldest queued job's id (a cheap read before trying :meth:`claim`)."""
        row = self._one(
            sa.select(JOBS.c.id)
            .where(JOBS.c.status == JobState.QUEUED.value)
            .order_by(JOBS.c.created_at)
            .limit(1)
        )
        return None if row is None else str(row.id)

    def claim(self, holder: str, lease_s: float) -> JobRecord | None:
        """Take the oldest queued job for replica ``holder``: atomically ``running``, its
        attempts + 1, under a lease expiring in ``lease_s`` s. None when nothing waits."""
        now = time.time()
        with self._write() as db:
            row = db.execute(
                sa.select(JOBS.c.id, JOBS.c.attempts, JOBS.c.started_at)
                .where(JOBS.c.status == JobState.QUEUED.value)
                .order_by(JOBS.c.created_at)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).first()
            if row is None:
                return None
            db.execute(
                sa.update(JOBS)
                .where(JOBS.c.id == row.id, JOBS.c.status == JobState.QUEUED.value)
                .values(
                    status=JobState.RUNNING.value,
                    attempts=row.attempts + 1,
                    started_at=row.started_at or now,
                    lease_owner=holder,
                    lease_expires_at=now + lease_s,
                )
            )
        return self.get_job(str(row.id))

    def heartbeat(self, holder: str, job_ids: Iterable[str], lease_s: float) -> list[LeaseState]:
        """Renew ``holder``'s leases on these jobs for ``lease_s`` s; what became of each."""
        ids = list(job_ids)
        if not ids:
            return []
        now = time.time()
        with self._write() as db:
            db.execute(
                sa.update(JOBS)
                .where(
                    JOBS.c.id.in_(ids),
                    JOBS.c.lease_owner == holder,
                    JOBS.c.status == JobState.RUNNING.value,
                )
                .values(lease_expires_at=now + lease_s)
            )
            rows = {
                r.id: r
                for r in db.execute(
                    sa.select(
                        JOBS.c.id, JOBS.c.status, JOBS.c.lease_owner, JOBS.c.cancel_requested
                    ).where(JOBS.c.id.in_(ids))
                )
            }
        out = []
        for job_id in ids:
            r = rows.get(job_id)
            status = None if r is None else JobState(r.status)
            out.append(
                LeaseState(
                    job_id=job_id,
                    status=status,
                    held=r is not None and status is JobState.RUNNING and r.lease_owner == holder,
                    cancel_requested=bool(r is not None and r.cancel_requested),
                )
            )
        return out

    def expired(self, now: float | None = None) -> list[JobRecord]:
        """Running jobs whose lease is missing or expired before ``now`` (their replica died
        or lost the database), oldest first."""
        now = time.time() if now is None else now
        query = (
            sa.select(*JOBS.c)
            .where(
                JOBS.c.status == JobState.RUNNING.value,
                sa.or_(JOBS.c.lease_expires_at.is_(None), JOBS.c.lease_expires_at < now),
            )
            .order_by(JOBS.c.created_at)
        )
        with self._read() as db:
            return [row_to_job(r) for r in db.execute(query)]
