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

A SQLite file is created 0600 (its directory 0700 when this creates it); SQLite gives its
``-wal`` and ``-shm`` files the same mode.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event

from policyopt.errors import ConfigError, StateError

__all__ = [
    "TERMINAL_EVENTS",
    "TERMINAL_STATES",
    "JobRecord",
    "JobState",
    "JobStore",
    "LeaseState",
    "StoredEvent",
    "hash_api_key",
    "new_job_id",
]


class JobState(str, Enum):
    """The states of a job; succeeded, failed and cancelled are terminal."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True when the job will not change any more."""
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
#: the event that ends a job's stream, by terminal state
TERMINAL_EVENTS = {
    JobState.SUCCEEDED: "job.succeeded",
    JobState.FAILED: "job.failed",
    JobState.CANCELLED: "job.cancelled",
}
_UNFINISHED = (JobState.PENDING.value, JobState.QUEUED.value, JobState.RUNNING.value)

_JSON = sa.JSON(none_as_null=True)
_METADATA = sa.MetaData()
_JOBS = sa.Table(
    "jobs",
    _METADATA,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("owner", sa.Text, nullable=False),
    sa.Column("algorithm", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("config", _JSON, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("started_at", sa.Double),
    sa.Column("finished_at", sa.Double),
    sa.Column("error", sa.Text),
    sa.Column("progress", _JSON, nullable=False, server_default="{}"),
    sa.Column("best_score", sa.Double),
    sa.Column("best_prompt", _JSON),
    sa.Column("results", _JSON),
    sa.Column("cancel_requested", sa.Integer, nullable=False, server_default="0"),
    sa.Column("cancel_reason", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_seq", sa.Integer, nullable=False, server_default="0"),
    sa.Column("lease_owner", sa.Text),
    sa.Column("lease_expires_at", sa.Double),
    sa.Index("jobs_owner", "owner", "created_at"),
    sa.Index("jobs_status", "status"),
)
_EVENTS = sa.Table(
    "events",
    _METADATA,
    sa.Column("job_id", sa.Text, nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("ts", sa.Double, nullable=False),
    sa.Column("level", sa.Text, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("data", _JSON, nullable=False),
    sa.PrimaryKeyConstraint("job_id", "seq"),
    sqlite_with_rowid=False,
)
_API_KEYS = sa.Table(
    "api_keys",
    _METADATA,
    sa.Column("owner", sa.Text, primary_key=True),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("active", sa.Integer, nullable=False, server_default="1"),
    sa.Column("created_at", sa.Double, nullable=False),
)
#: columns added after the first release: (name, type) added to an older database on open
_ADDED_COLUMNS = (("lease_owner", "TEXT"), ("lease_expires_at", "DOUBLE PRECISION"))
#: a PostgreSQL advisory lock key: one replica at a time creates or upgrades the schema
_SCHEMA_LOCK = 0x706F6C6F


def hash_api_key(key: str) -> str:
    """The owner id of an API key: its SHA-256 in hex (the key itself is never stored)."""
    if not isinstance(key, str) or not key:
        raise ConfigError("An API key must be a non-empty string.")
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _private_file(path: Path) -> None:
    """Create ``path`` if missing and make it readable by this user only (0600)."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)


def new_job_id() -> str:
    """A fresh, unguessable job id such as ``po_3f9a0c1b2d4e5f60``."""
    return f"po_{secrets.token_hex(8)}"


@dataclass(frozen=True)
class StoredEvent:
    """One event of a job as stored: ``seq`` increases by one per job, from 1."""

    job_id: str
    seq: int
    type: str
    ts: float
    level: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape the API serves."""
        return {
            "job_id": self.job_id,
            "seq": self.seq,
            "type": self.type,
            "ts": self.ts,
            "level": self.level,
            "message": self.message,
            "data": self.data,
        }

    @property
    def terminal(self) -> bool:
        """True for the event that ends a job (job.succeeded / job.failed / job.cancelled)."""
        return self.type in TERMINAL_EVENTS.values()


@dataclass(frozen=True)
class JobRecord:
    """One row of ``jobs``, decoded."""

    id: str
    owner: str
    algorithm: str
    status: JobState
    config: dict[str, Any]
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None
    progress: dict[str, Any]
    best_score: float | None
    best_prompt: Any
    results: dict[str, Any] | None
    cancel_requested: bool
    cancel_reason: str | None
    attempts: int
    last_seq: int
    lease_owner: str | None = None
    lease_expires_at: float | None = None


@dataclass(frozen=True)
class LeaseState:
    """What a heartbeat learns of one job its replica runs: whether the lease is still its
    own (``held``; False once the job was requeued elsewhere or ended) and whether a cancel
    was asked for (on any replica)."""

    job_id: str
    status: JobState | None
    held: bool
    cancel_requested: bool


_JSON_COLUMNS = {"config", "progress", "best_prompt", "results"}
_UPDATABLE = {
    "status",
    "started_at",
    "finished_at",
    "error",
    "progress",
    "best_score",
    "best_prompt",
    "results",
    "cancel_requested",
    "cancel_reason",
    "attempts",
    "lease_owner",
    "lease_expires_at",
}
_LIGHT = [c for c in _JOBS.c if c.name not in ("config", "results")]
#: SQLite read connections kept by threads, at most (past that, reads use the pool)
_MAX_READERS = 64
# the hot statements, built once (every optimizer event appends one event)
_BUMP_SEQ = (
    sa.update(_JOBS)
    .where(_JOBS.c.id == sa.bindparam("job_id"))
    .values(last_seq=_JOBS.c.last_seq + 1)
)
_READ_SEQ = sa.select(_JOBS.c.last_seq).where(_JOBS.c.id == sa.bindparam("job_id"))
_INSERT_EVENT = sa.insert(_EVENTS)
# the hot reads, built once (a status poll, an event page): SQLAlchemy caches their SQL
_GET_FULL = sa.select(*_JOBS.c).where(_JOBS.c.id == sa.bindparam("job_id"))
_GET_LIGHT = sa.select(*_LIGHT).where(_JOBS.c.id == sa.bindparam("job_id"))
_EVENTS_AFTER = (
    sa.select(*_EVENTS.c)
    .where(_EVENTS.c.job_id == sa.bindparam("job_id"), _EVENTS.c.seq > sa.bindparam("since"))
    .order_by(_EVENTS.c.seq)
    .limit(sa.bindparam("limit"))
)


def _row_to_job(row: Any) -> JobRecord:
    data = dict(row._mapping)
    data.setdefault("config", {})
    data.setdefault("results", None)
    data["status"] = JobState(data["status"])
    data["cancel_requested"] = bool(data["cancel_requested"])
    data["progress"] = data["progress"] or {}
    return JobRecord(**data)


def _column_value(name: str, value: Any) -> Any:
    """A Python value as its column stores it."""
    if isinstance(value, JobState):
        return value.value
    if name == "cancel_requested":
        return int(bool(value))
    return value


def database_url(target: str | Path) -> sa.URL:
    """The SQLAlchemy URL of a store: a file path or ``sqlite:///...`` (SQLite), or
    ``postgresql://...`` (PostgreSQL through psycopg 3). Anything else is a ConfigError."""
    text = str(target)
    if text == ":memory:" or (text.startswith("sqlite://") and text.endswith(":memory:")):
        raise ConfigError("The job store needs a database file, not ':memory:'.")
    if "://" not in text:
        return sa.URL.create("sqlite", database=str(Path(text)))
    try:
        url = sa.make_url(text)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"--db {text!r} is not a database URL: {exc}") from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database:
            raise ConfigError(f"--db {text!r} names no SQLite file (sqlite:///path/jobs.db).")
        return url.set(drivername="sqlite")
    if backend == "postgresql":
        if url.get_driver_name() != "psycopg2" or url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")  # psycopg 3 unless psycopg2 is named
        return url
    raise ConfigError(
        f"--db: unsupported database {backend!r}; use a SQLite file path or a "
        "postgresql://user@host:port/dbname URL."
    )


class JobStore:
    """Jobs, events, key owners and leases in SQLite or PostgreSQL; every method is
    thread-safe, and several processes (replicas) may share one database."""

    def __init__(self, path: str | Path) -> None:
        url = database_url(path)
        self.url = url
        self.dialect = url.get_backend_name()
        #: the SQLite file (None for PostgreSQL)
        self.path: Path | None = Path(url.database or "") if self.dialect == "sqlite" else None
        self._write_lock: threading.Lock | None = None
        if self.path is not None:
            if not self.path.parent.exists():
                self.path.parent.mkdir(mode=0o700, parents=True)
            _private_file(self.path)
            for suffix in ("-wal", "-shm"):
                side = self.path.with_name(self.path.name + suffix)
                if side.exists():
                    _private_file(side)
            self._write_lock = threading.Lock()
        self._closed = False
        self._local = threading.local()
        self._readers: list[sa.Connection] = []
        self._readers_lock = threading.Lock()
        self.engine = self._make_engine(url)
        self._writer = self.engine.execution_options(policyopt_write=True)
        try:
            self._create_schema()
        except (sa.exc.SQLAlchemyError, self.engine.dialect.loaded_dbapi.Error) as exc:
            self.engine.dispose()
            raise StateError(
                f"{self.describe()} is not a usable job database: {_why(exc)}"
            ) from exc

    # ---------------------------------------------------------------- connections
    def describe(self) -> str:
        """The database, for messages (a PostgreSQL password hidden)."""
        if self.path is not None:
            return str(self.path)
        return self.url.render_as_string(hide_password=True)

    def _make_engine(self, url: sa.URL) -> sa.Engine:
        dumps = lambda value: json.dumps(value, default=repr)  # noqa: E731
        if self.dialect == "postgresql":
            try:
                import psycopg  # noqa: F401
            except ImportError:
                raise ConfigError(
                    "A PostgreSQL job store needs psycopg 3: pip install 'policyopt[remote]'."
                ) from None
            return sa.create_engine(
                url,
                pool_size=4,
                max_overflow=32,
                pool_pre_ping=True,
                json_serializer=dumps,
                connect_args={"connect_timeout": 10},
            )
        engine = sa.create_engine(
            url,
            pool_size=8,
            max_overflow=256,  # a read connection per thread (cheap with SQLite)
            json_serializer=dumps,
            connect_args={"timeout": 30.0, "check_same_thread": False},
        )

        @sa_event.listens_for(engine, "connect")
        def _on_connect(dbapi: Any, record: Any) -> None:
            dbapi.isolation_level = None  # transactions are begun below, not by the driver
            cursor = dbapi.cursor()
            for pragma in (
                "PRAGMA journal_mode=WAL",
                "PRAGMA synchronous=NORMAL",
                "PRAGMA busy_timeout=30000",
                "PRAGMA foreign_keys=ON",
            ):
                cursor.execute(pragma)
            cursor.close()

        @sa_event.listens_for(engine, "begin")
        def _on_begin(connection: sa.Connection) -> None:
            # a write takes the database's write lock at once (no deadlock on upgrade); a read
            # is one SELECT, atomic on its own (WAL snapshot): no BEGIN/ROLLBACK round trip
            if connection.get_execution_options().get("policyopt_write"):
                connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    def _create_schema(self) -> None:
        with self._write() as db:
            if self.dialect == "postgresql":
                db.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK)))
            _METADATA.create_all(db, checkfirst=True)
            have = {c["name"] for c in sa.inspect(db).get_columns("jobs")}
            for name, kind in _ADDED_COLUMNS:  # a database written by an older policyopt
                if name not in have:
                    db.exec_driver_sql(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        if self._closed:
            raise StateError("the job store is closed")
        db = getattr(self._local, "db", None)
        if db is None and (self.path is None or len(self._readers) >= _MAX_READERS):
            # PostgreSQL (or many threads): a pooled connection per read
            with self.engine.connect() as pooled:
                yield pooled
            return
        # SQLite: each thread keeps one read connection (as the single-server store did): a
        # status poll then costs no pool checkout; dropped after an error, made again
        if db is None:
            db = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self._local.db = db
            with self._readers_lock:
                self._readers.append(db)
        try:
            yield db
        except BaseException:
            self._local.db = None
            with self._readers_lock, contextlib.suppress(ValueError):
                self._readers.remove(db)
            with contextlib.suppress(Exception):
                db.close()
            raise

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """One write transaction (SQLite: ``BEGIN IMMEDIATE``, serialized within this process)."""
        if self._closed:
            raise StateError("the job store is closed")
        with self._write_lock or nullcontext(), self._writer.begin() as db:
            yield db

    def close(self) -> None:
        """Close every connection this store opened (the database stays)."""
        self._closed = True
        with self._readers_lock:
            for db in self._readers:
                with contextlib.suppress(Exception):
                    db.close()
            self._readers.clear()
        self.engine.dispose()

    # ---------------------------------------------------------------- API keys
    def set_api_keys(self, keys: Mapping[str, str]) -> None:
        """Make exactly these owners active: ``{owner_id: label}``; others are deactivated."""
        now = time.time()
        with self._write() as db:
            db.execute(sa.update(_API_KEYS).values(active=0))
            for owner, label in keys.items():
                done = db.execute(
                    sa.update(_API_KEYS)
                    .where(_API_KEYS.c.owner == owner)
                    .values(active=1, label=label)
                ).rowcount
                if not done:
                    db.execute(
                        sa.insert(_API_KEYS).values(
                            owner=owner, label=label, active=1, created_at=now
                        )
                    )

    def rename_owner(self, old: str, new: str) -> int:
        """Give ``old``'s jobs to ``new`` (an owner-id scheme change); returns how many."""
        with self._write() as db:
            moved = db.execute(
                sa.update(_JOBS).where(_JOBS.c.owner == old).values(owner=new)
            ).rowcount
            db.execute(sa.delete(_API_KEYS).where(_API_KEYS.c.owner == old))
        return int(moved)

    def usage(self, owner: str) -> dict[str, float]:
        """What a key's jobs hold: ``active`` (unfinished jobs), ``rollouts`` (used by finished
        jobs, their test scoring included; budgeted by unfinished ones, plus the test scoring's
        most: the seed and the best prompt on every test id) and ``cost_usd`` (spent by
        finished jobs as far as known, else their cap; capped by unfinished ones)."""
        j = _JOBS.c
        active = j.status.in_(_UNFINISHED)
        cap = j.config[("budget", "max_cost_usd")].as_float()
        test_most = 2 * sa.func.coalesce(sa.func.json_array_length(j.config["test_ids"]), 0)
        row = self._one(
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
            ).where(j.owner == owner, *self._valid_json(j.config, j.progress, j.results))
        )
        assert row is not None
        return {
            "active": int(row[0] or 0),
            "rollouts": int(row[1] or 0),
            "cost_usd": float(row[2] or 0.0),
        }

    def _valid_json(self, *columns: Any) -> list[Any]:
        """SQLite only: conditions skipping rows whose JSON its functions cannot read (an
        older server stored ``Infinity``), so one bad row never fails every quota check of
        its key. PostgreSQL never stores such JSON."""
        if self.dialect != "sqlite":
            return []
        return [sa.or_(c.is_(None), sa.func.json_valid(c) == 1) for c in columns]

    def active_owners(self) -> dict[str, str]:
        """``{owner_id: label}`` of the keys accepted now."""
        with self._read() as db:
            rows = db.execute(
                sa.select(_API_KEYS.c.owner, _API_KEYS.c.label).where(_API_KEYS.c.active == 1)
            )
            return {row.owner: row.label for row in rows}

    def _one(self, query: Any) -> Any:
        with self._read() as db:
            return db.execute(query).first()

    # ---------------------------------------------------------------- jobs
    def create_job(
        self,
        *,
        owner: str,
        algorithm: str,
        config: Mapping[str, Any],
        job_id: str | None = None,
        max_rollouts: int | None = None,
    ) -> JobRecord:
        """Insert a new job in state ``pending`` with its ``job.created`` event (seq 1)."""
        job_id = job_id or new_job_id()
        now = time.time()
        progress = {"rollouts_used": 0, "max_rollouts": max_rollouts}
        with self._write() as db:
            db.execute(
                sa.insert(_JOBS).values(
                    id=job_id,
                    owner=owner,
                    algorithm=algorithm,
                    status=JobState.PENDING.value,
                    config=dict(config),
                    created_at=now,
                    progress=progress,
                )
            )
            self._append(db, job_id, "job.created", "job created", {"algorithm": algorithm}, now)
        job = self.get_job(job_id)
        assert job is not None
        return job

    def get_job(
        self, job_id: str, owner: str | None = None, *, full: bool = True
    ) -> JobRecord | None:
        """The job, or None when it does not exist or (with ``owner``) belongs to someone else.

        ``full=False`` skips the two large columns (``config`` comes back ``{}``, ``results``
        None): what a status answer needs, read cheaply.
        """
        with self._read() as db:
            row = db.execute(_GET_FULL if full else _GET_LIGHT, {"job_id": job_id}).first()
        if row is None or (owner is not None and row.owner != owner):
            return None
        return _row_to_job(row)

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
        query = sa.select(*(_JOBS.c if full else _LIGHT))
        if owner is not None:
            query = query.where(_JOBS.c.owner == owner)
        if states is not None:
            query = query.where(_JOBS.c.status.in_([JobState(s).value for s in states]))
        query = query.order_by(_JOBS.c.created_at.desc()).limit(int(limit))
        with self._read() as db:
            return [_row_to_job(r) for r in db.execute(query)]

    def count_jobs(self, states: Iterable[JobState]) -> int:
        """How many jobs (of every owner) are in these states."""
        names = [JobState(s).value for s in states]
        row = self._one(sa.select(sa.func.count()).where(_JOBS.c.status.in_(names)))
        return int(row[0])

    def update_job(self, job_id: str, **fields: Any) -> None:
        """Set some columns of a job (JSON columns take Python values)."""
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ConfigError(f"Cannot update job columns {sorted(unknown)}.")
        if not fields:
            return
        values = {name: _column_value(name, value) for name, value in fields.items()}
        with self._write() as db:
            db.execute(sa.update(_JOBS).where(_JOBS.c.id == job_id).values(**values))

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
            if name not in _UPDATABLE:
                raise ConfigError(f"Cannot update job column {name!r}.")
        with self._write() as db:
            row = db.execute(
                sa.select(_JOBS.c.status, _JOBS.c.lease_owner, _JOBS.c.lease_expires_at)
                .where(_JOBS.c.id == job_id)
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
                columns[name] = _column_value(name, value)
            db.execute(sa.update(_JOBS).where(_JOBS.c.id == job_id).values(**columns))
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
                sa.select(_JOBS.c.status).where(_JOBS.c.id == job_id).with_for_update()
            ).first()
            if row is None:
                return None
            state = JobState(row.status)
            if not state.terminal:
                db.execute(
                    sa.update(_JOBS)
                    .where(_JOBS.c.id == job_id)
                    .values(cancel_requested=1, cancel_reason=reason)
                )
                self._append(
                    db, job_id, "job.cancel_requested", reason or "cancel requested", {}, now
                )
                if state in (JobState.PENDING, JobState.QUEUED):
                    db.execute(
                        sa.update(_JOBS)
                        .where(_JOBS.c.id == job_id)
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

    # ---------------------------------------------------------------- queue and leases
    def next_queued(self) -> str | None:
        """The oldest queued job's id (a cheap read before trying :meth:`claim`)."""
        row = self._one(
            sa.select(_JOBS.c.id)
            .where(_JOBS.c.status == JobState.QUEUED.value)
            .order_by(_JOBS.c.created_at)
            .limit(1)
        )
        return None if row is None else str(row.id)

    def claim(self, holder: str, lease_s: float) -> JobRecord | None:
        """Take the oldest queued job for replica ``holder``: atomically ``running``, its
        attempts + 1, under a lease expiring in ``lease_s`` s. None when nothing waits."""
        now = time.time()
        with self._write() as db:
            row = db.execute(
                sa.select(_JOBS.c.id, _JOBS.c.attempts, _JOBS.c.started_at)
                .where(_JOBS.c.status == JobState.QUEUED.value)
                .order_by(_JOBS.c.created_at)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).first()
            if row is None:
                return None
            db.execute(
                sa.update(_JOBS)
                .where(_JOBS.c.id == row.id, _JOBS.c.status == JobState.QUEUED.value)
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
                sa.update(_JOBS)
                .where(
                    _JOBS.c.id.in_(ids),
                    _JOBS.c.lease_owner == holder,
                    _JOBS.c.status == JobState.RUNNING.value,
                )
                .values(lease_expires_at=now + lease_s)
            )
            rows = {
                r.id: r
                for r in db.execute(
                    sa.select(
                        _JOBS.c.id, _JOBS.c.status, _JOBS.c.lease_owner, _JOBS.c.cancel_requested
                    ).where(_JOBS.c.id.in_(ids))
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
            sa.select(*_JOBS.c)
            .where(
                _JOBS.c.status == JobState.RUNNING.value,
                sa.or_(_JOBS.c.lease_expires_at.is_(None), _JOBS.c.lease_expires_at < now),
            )
            .order_by(_JOBS.c.created_at)
        )
        with self._read() as db:
            return [_row_to_job(r) for r in db.execute(query)]

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
        done = db.execute(_BUMP_SEQ, {"job_id": job_id}).rowcount
        if not done:
            raise StateError(f"No job {job_id!r}.")
        seq = int(db.execute(_READ_SEQ, {"job_id": job_id}).scalar_one())
        db.execute(
            _INSERT_EVENT,
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
                for r in db.execute(_EVENTS_AFTER, params)
            ]


def _why(exc: BaseException) -> str:
    """A database error's first line, without SQLAlchemy's background link."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
