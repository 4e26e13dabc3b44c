"""The job server's database: jobs, their events, the API keys' owners and the jobs' leases.

One database layer, SQLAlchemy Core, over two backends:

* **SQLite** (a file path, or ``sqlite:///path``): replicas on one host. WAL mode (readers
  never wait for the writer), a 30 s busy timeout, and every write transaction is
  ``BEGIN IMMEDIATE`` (plus a lock within the process), so two processes on one file never
  hand out the same event ``seq`` or claim the same job.
* **PostgreSQL** (``postgresql://user@host:port/db``, driver psycopg 3): replicas on several
  hosts. Rows read before a conditional write are locked (``SELECT ... FOR UPDATE``), a
  claim skips rows another replica is claiming (``FOR UPDATE SKIP LOCKED``) and the event seq
  is an atomic ``last_seq = last_seq + 1``.

Everything is stored as JSON text; nothing is pickled.

Tables::

    jobs      one row per job: owner, state, config, times, progress, best, results, error,
              and the lease (lease_owner: the replica running it, lease_expires_at)
    events    (job_id, seq) -> type, time, level, message, data; seq increases by 1 per job
    api_keys  owner id (an HMAC of the key, never the key) -> label, active flag

A running job is held under a lease that its replica renews (:meth:`JobStore.heartbeat`);
a job whose lease expired (its replica died) is put back in the queue by any replica
(:meth:`JobStore.expired`, then :meth:`JobStore.transition` with ``expired_before``), the
pattern of Optuna's heartbeat and failed-trial retry.

The store is built in layers, one module each: :mod:`~policyopt.remote.store.db` (the schema:
tables, rows, connections), :mod:`~policyopt.remote.store.reads` (reads),
:mod:`~policyopt.remote.store.leases` (the queue and leases) and
:mod:`~policyopt.remote.store.writes` (the writes: keys, jobs, transitions, events: the
:class:`JobStore`); this package re-exports every public name.

A SQLite file is created 0600 (its directory 0700 when this creates it); SQLite gives its
``-wal`` and ``-shm`` files the same mode.
"""

from __future__ import annotations

from policyopt.remote.store.writes import (
    TERMINAL_EVENTS,
    TERMINAL_STATES,
    JobRecord,
    JobState,
    JobStore,
    LeaseState,
    StoredEvent,
    database_url,
    hash_api_key,
    new_job_id,
)

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
