"""The job database: its tables, rows and connections, under the job store.

The schema (``jobs``, ``events``, ``api_keys``), the records read from it, the prepared statements,
the database URL rules, and :class:`Database`: one engine, a read connection per thread (SQLite)
and serialized write transactions. :mod:`policyopt.remote.store` builds the store on it and
re-exports the public names.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event

from policyopt.errors import ConfigError, StateError
from policyopt.remote.api_schema import TERMINAL_EVENTS, TERMINAL_STATES, JobState

__all__ = [
    "API_KEYS",
    "BUMP_SEQ",
    "EVENTS_AFTER",
    "GET_FULL",
    "GET_LIGHT",
    "INSERT_EVENT",
    "JOBS",
    "LIGHT",
    "QUOTA_LOCK",
    "READ_SEQ",
    "TERMINAL_EVENTS",
    "TERMINAL_STATES",
    "UNFINISHED",
    "UPDATABLE",
    "Database",
    "JobRecord",
    "JobState",
    "LeaseState",
    "StoredEvent",
    "column_value",
    "database_url",
    "hash_api_key",
    "new_job_id",
    "row_to_job",
]


UNFINISHED = (JobState.PENDING.value, JobState.QUEUED.value, JobState.RUNNING.value)

_JSON = sa.JSON(none_as_null=True)
_METADATA = sa.MetaData()
JOBS = sa.Table(
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
    sa.Column("reserved", _JSON),
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
API_KEYS = sa.Table(
    "api_keys",
    _METADATA,
    sa.Column("owner", sa.Text, primary_key=True),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("active", sa.Integer, nullable=False, server_default="1"),
    sa.Column("created_at", sa.Double, nullable=False),
)
#: columns added after the first release: (name, type) added to an older database on open
_ADDED_COLUMNS = (
    ("lease_owner", "TEXT"),
    ("lease_expires_at", "DOUBLE PRECISION"),
    ("reserved", "JSON"),
)
#: a PostgreSQL advisory lock key: one replica at a time creates or upgrades the schema
_SCHEMA_LOCK = 0x706F6C6F
#: the first key of a PostgreSQL advisory lock per owner: one submit of a key at a time checks
#: the key's quotas and inserts its job (the second key is the owner's hashtext)
QUOTA_LOCK = 0x706F6C71


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
    #: what the job holds of its key's quotas while unfinished (``lm_calls``: its optimizer-LM
    #: cap); a finished job is charged what it spent instead
    reserved: dict[str, Any] | None = None


@dataclass(frozen=True)
class LeaseState:
    """What a heartbeat learns of one job its replica runs: whether the lease is still its
    own (``held``; False once the job was requeued elsewhere or ended) and whether a cancel
    was asked for (on any replica)."""

    job_id: str
    status: JobState | None
    held: bool
    cancel_requested: bool


_JSON_COLUMNS = {"config", "progress", "best_prompt", "results", "reserved"}
UPDATABLE = {
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
LIGHT = [c for c in JOBS.c if c.name not in ("config", "results")]
#: SQLite read connections kept by threads, at most (past that, reads use the pool)
_MAX_READERS = 64
# the hot statements, built once (every optimizer event appends one event)
BUMP_SEQ = (
    sa.update(JOBS).where(JOBS.c.id == sa.bindparam("job_id")).values(last_seq=JOBS.c.last_seq + 1)
)
READ_SEQ = sa.select(JOBS.c.last_seq).where(JOBS.c.id == sa.bindparam("job_id"))
INSERT_EVENT = sa.insert(_EVENTS)
# the hot reads, built once (a status poll, an event page): SQLAlchemy caches their SQL
GET_FULL = sa.select(*JOBS.c).where(JOBS.c.id == sa.bindparam("job_id"))
GET_LIGHT = sa.select(*LIGHT).where(JOBS.c.id == sa.bindparam("job_id"))
EVENTS_AFTER = (
    sa.select(*_EVENTS.c)
    .where(_EVENTS.c.job_id == sa.bindparam("job_id"), _EVENTS.c.seq > sa.bindparam("since"))
    .order_by(_EVENTS.c.seq)
    .limit(sa.bindparam("limit"))
)


def row_to_job(row: Any) -> JobRecord:
    data = dict(row._mapping)
    data.setdefault("config", {})
    data.setdefault("results", None)
    data["status"] = JobState(data["status"])
    data["cancel_requested"] = bool(data["cancel_requested"])
    data["progress"] = data["progress"] or {}
    return JobRecord(**data)


def column_value(name: str, value: Any) -> Any:
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


def _why(exc: BaseException) -> str:
    """A database error's first line, without SQLAlchemy's background link."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class Database:
    """The connections of one job database: ``_read`` and ``_write`` for the stores above."""

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

    def _one(self, query: Any) -> Any:
        with self._read() as db:
            return db.execute(query).first()

    def _valid_json(self, *columns: Any) -> list[Any]:
        """SQLite only: conditions skipping rows whose JSON its functions cannot read (an
        older server stored ``Infinity``), so one bad row never fails every quota check of
        its key. PostgreSQL never stores such JSON."""
        if self.dialect != "sqlite":
            return []
        return [sa.or_(c.is_(None), sa.func.json_valid(c) == 1) for c in columns]
