"""The job store's reads: a job, lists and counts of jobs, a job's events, a key's usage.

One layer of :class:`~policyopt.remote.store.JobStore` (the writes are in
:mod:`policyopt.remote.store.writes`, the queue and leases in :mod:`policyopt.remote.store.leases`).
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from policyopt.remote.store.db import (
    API_KEYS,
    EVENTS_AFTER,
    GET_FULL,
    GET_LIGHT,
    JOBS,
    LIGHT,
    UNFINISHED,
    Database,
    JobRecord,
    JobState,
    StoredEvent,
    row_to_job,
)

__all__ = ["Reads"]


class Reads(Database):
    """Reads of jobs, events and key usage (every one a single consistent read)."""

    def get_job(
        self, job_id: str, owner: str | None = None, *, full: bool = True
    ) -> JobRecord | None:
        """The job, or None when it does not exist or (with ``owner``) belongs to someone else.

        ``full=False`` skips the two large columns (``config`` comes back ``{}``, ``results``
        None): what a status answer needs, read cheaply.
        """
        with self._read() as db:
            row = db.execute(GET_FULL if full else GET_LIGHT, {"job_id": job_id}).first()
        if row is None or (owner is not None and row.owner != owner):
            return None
        return row_to_job(row)

    def list_jobs(
        self,
        *,
        owner: str | None = None,
        states: Iterable[JobState] | None = None,
        limit: int = 100,
        full: bool = True,
    ) -> list[JobRecord]:
        """Jobs, newest first, optionally of one owner and in some states (``full=False``: as
        in :meth:`get_job`, without config and results)."""
        query = sa.select(*(JOBS.c if full else LIGHT))
        if owner is not None:
            query = query.where(JOBS.c.owner == owner)
        if states is not None:
            query = query.where(JOBS.c.status.in_([JobState(s).value for s in states]))
        query = query.order_by(JOBS.c.created_at.desc()).limit(int(limit))
        with self._read() as db:
            return [row_to_job(r) for r in db.execute(query)]

    def count_jobs(self, states: Iterable[JobState]) -> int:
        """How many jobs (of every owner) are in these states."""
        names = [JobState(s).value for s in states]
        row = self._one(sa.select(sa.func.count()).where(JOBS.c.status.in_(names)))
        return int(row[0])

    def usage(self, owner: str) -> dict[str, float]:
        """What a key's jobs hold of its quotas (see :meth:`usage_on`), in one read."""
        with self._read() as db:
            return self.usage_on(db, owner)

    def usage_on(self, db: sa.Connection, owner: str) -> dict[str, float]:
        """What a key's jobs hold, read on ``db`` (a write transaction: the quota check and the
        insert of :meth:`~policyopt.remote.store.JobStore.create_job` are one transaction).

        ``active``: unfinished jobs. ``rollouts``: used by finished jobs, their test scoring
        included; budgeted by unfinished ones, plus the test scoring's most (the seed and the
        best prompt on every test id). ``cost_usd``: spent by finished jobs as far as known,
        else their cap; capped by unfinished ones. ``lm_calls``: optimizer-LM calls billed to
        finished jobs (every segment of a resumed run), else their reserved cap; the reserved
        cap of unfinished ones.
        """
        j = JOBS.c
        active = j.status.in_(UNFINISHED)
        cap = j.config[("budget", "max_cost_usd")].as_float()
        calls_cap = sa.func.coalesce(j.reserved["lm_calls"].as_float(), 0)
        test_most = 2 * sa.func.coalesce(sa.func.json_array_length(j.config["test_ids"]), 0)
        row = db.execute(
            sa.select(
                sa.func.sum(sa.case((active, 1), else_=0)),
                sa.func.sum(
                    sa.case(
                        (
                            active,
                            sa.func.coalesce(j.progress["max_rollouts"].as_float(), 0) + test_most,
                        ),
                        else_=sa.func.coalesce(j.progress["rollouts_used"].as_float(), 0)
                        + sa.func.coalesce(j.results[("usage", "test_rollouts")].as_float(), 0),
                    )
                ),
                sa.func.sum(
                    sa.case(
                        (active, sa.func.coalesce(cap, 0)),
                        else_=sa.func.coalesce(j.results[("usage", "cost_usd")].as_float(), cap, 0),
                    )
                ),
                sa.func.sum(
                    sa.case(
                        (active, calls_cap),
                        else_=sa.func.coalesce(
                            j.results[("usage", "lm_calls")].as_float(), calls_cap
                        ),
                    )
                ),
            ).where(
                j.owner == owner, *self._valid_json(j.config, j.progress, j.results, j.reserved)
            )
        ).first()
        assert row is not None
        return {
            "active": int(row[0] or 0),
            "rollouts": int(row[1] or 0),
            "cost_usd": float(row[2] or 0.0),
            "lm_calls": int(row[3] or 0),
        }

    def active_owners(self) -> dict[str, str]:
        """``{owner_id: label}`` of the keys accepted now."""
        with self._read() as db:
            rows = db.execute(
                sa.select(API_KEYS.c.owner, API_KEYS.c.label).where(API_KEYS.c.active == 1)
            )
            return {row.owner: row.label for row in rows}

    def events(self, job_id: str, since_seq: int = 0, limit: int = 1000) -> list[StoredEvent]:
        """Events of a job with ``seq > since_seq``, in order, at most ``limit``."""
        params = {"job_id": job_id, "since": int(since_seq), "limit": int(limit)}
        with self._read() as db:
            return [
                StoredEvent(
                    job_id=r.job_id,
                    seq=r.seq,
                    type=r.type,
                    ts=r.ts,
                    level=r.level,
                    message=r.message,
                    data=r.data if r.data is not None else {},
                )
                for r in db.execute(EVENTS_AFTER, params)
            ]
