"""The job server's database: jobs, their events and the API keys' owners, in one SQLite file.

A real file in WAL mode (readers never wait for the writer), safe to share between the
server's request threads and its job threads: every thread gets its own connection, and writes
are serialized by a lock plus ``BEGIN IMMEDIATE`` (so two server processes on one file cannot
hand out the same event ``seq`` either). Everything is stored as JSON text; nothing is pickled.

Tables::

    jobs      one row per job: owner, state, config, times, progress, best, results, error
    events    (job_id, seq) -> type, time, level, message, data; seq increases by 1 per job
    api_keys  owner id (an HMAC of the key, never the key) -> label, active flag

The file is created 0600 (its directory 0700 when this creates it); SQLite gives its ``-wal``
and ``-shm`` files the same mode.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from policyopt.errors import ConfigError, StateError

__all__ = [
    "TERMINAL_EVENTS",
    "TERMINAL_STATES",
    "JobRecord",
    "JobState",
    "JobStore",
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

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    status TEXT NOT NULL,
    config TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    error TEXT,
    progress TEXT NOT NULL DEFAULT '{}',
    best_score REAL,
    best_prompt TEXT,
    results TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    cancel_reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_seq INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created_at);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    ts REAL NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS api_keys (
    owner TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL
);
"""


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
}


_LIGHT_COLUMNS = (
    "id, owner, algorithm, status, '{}' AS config, created_at, started_at, finished_at, error, "
    "progress, best_score, best_prompt, NULL AS results, cancel_requested, cancel_reason, "
    "attempts, last_seq"
)


def _row_to_job(row: sqlite3.Row) -> JobRecord:
    data = dict(row)
    for name in _JSON_COLUMNS:
        raw = data[name]
        data[name] = None if raw is None else json.loads(raw)
    data["status"] = JobState(data["status"])
    data["cancel_requested"] = bool(data["cancel_requested"])
    data["progress"] = data["progress"] or {}
    return JobRecord(**data)


class JobStore:
    """Jobs, events and key owners in one SQLite file; every method is thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) == ":memory:":
            raise ConfigError("The job store needs a database file, not ':memory:'.")
        if not self.path.parent.exists():
            self.path.parent.mkdir(mode=0o700, parents=True)
        _private_file(self.path)
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                _private_file(side)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._closed = False
        try:
            with self._write_lock:
                self._connection().executescript(_SCHEMA)  # commits on its own
        except sqlite3.DatabaseError as exc:
            raise StateError(f"{self.path} is not a usable job database: {exc}") from exc

    # ---------------------------------------------------------------- connections
    def _connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            if self._closed:
                raise StateError("the job store is closed")
            db = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            self._local.db = db
            with self._connections_lock:
                self._connections.append(db)
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``), serialized within this process."""
        db = self._connection()
        with self._write_lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def close(self) -> None:
        """Close every connection this store opened (the file stays)."""
        with self._connections_lock:
            self._closed = True
            for db in self._connections:
                db.close()
            self._connections.clear()
        self._local = threading.local()

    # ---------------------------------------------------------------- API keys
    def set_api_keys(self, keys: Mapping[str, str]) -> None:
        """Make exactly these owners active: ``{owner_id: label}``; others are deactivated."""
        now = time.time()
        with self._write() as db:
            db.execute("UPDATE api_keys SET active = 0")
            for owner, label in keys.items():
                db.execute(
                    "INSERT INTO api_keys (owner, label, active, created_at) VALUES (?, ?, 1, ?) "
                    "ON CONFLICT(owner) DO UPDATE SET active = 1, label = excluded.label",
                    (owner, label, now),
                )

    def rename_owner(self, old: str, new: str) -> int:
        """Give ``old``'s jobs to ``new`` (an owner-id scheme change); returns how many."""
        with self._write() as db:
            moved = db.execute("UPDATE jobs SET owner = ? WHERE owner = ?", (new, old)).rowcount
            db.execute("DELETE FROM api_keys WHERE owner = ?", (old,))
        return int(moved)

    def usage(self, owner: str) -> dict[str, float]:
        """What a key's jobs hold: ``active`` (unfinished jobs), ``rollouts`` (used by finished
        jobs, budgeted by unfinished ones) and ``cost_usd`` (spent by finished jobs as far as
        known, else their cap; capped by unfinished ones)."""
        row = (
            self._connection()
            .execute(
                "SELECT "
                "SUM(CASE WHEN status IN ('pending', 'queued', 'running') THEN 1 ELSE 0 END), "
                "SUM(CASE WHEN status IN ('pending', 'queued', 'running') "
                "THEN COALESCE(json_extract(progress, '$.max_rollouts'), 0) "
                "ELSE COALESCE(json_extract(progress, '$.rollouts_used'), 0) END), "
                "SUM(CASE WHEN status IN ('pending', 'queued', 'running') "
                "THEN COALESCE(json_extract(config, '$.budget.max_cost_usd'), 0) "
                "ELSE COALESCE(json_extract(results, '$.usage.cost_usd'), "
                "json_extract(config, '$.budget.max_cost_usd'), 0) END) "
                "FROM jobs WHERE owner = ?",
                (owner,),
            )
            .fetchone()
        )
        return {
            "active": int(row[0] or 0),
            "rollouts": int(row[1] or 0),
            "cost_usd": float(row[2] or 0.0),
        }

    def active_owners(self) -> dict[str, str]:
        """``{owner_id: label}`` of the keys accepted now."""
        rows = self._connection().execute("SELECT owner, label FROM api_keys WHERE active = 1")
        return {row["owner"]: row["label"] for row in rows}

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
                "INSERT INTO jobs (id, owner, algorithm, status, config, created_at, progress) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    owner,
                    algorithm,
                    JobState.PENDING.value,
                    json.dumps(dict(config)),
                    now,
                    json.dumps(progress),
                ),
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
        columns = "*" if full else _LIGHT_COLUMNS
        row = (
            self._connection()
            .execute(f"SELECT {columns} FROM jobs WHERE id = ?", (job_id,))
            .fetchone()
        )
        if row is None or (owner is not None and row["owner"] != owner):
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
        sql = f"SELECT {'*' if full else _LIGHT_COLUMNS} FROM jobs WHERE 1=1"
        args: list[Any] = []
        if owner is not None:
            sql += " AND owner = ?"
            args.append(owner)
        if states is not None:
            names = [JobState(s).value for s in states]
            sql += f" AND status IN ({', '.join('?' * len(names))})"
            args.extend(names)
        sql += " ORDER BY created_at DESC LIMIT ?"
        args.append(int(limit))
        return [_row_to_job(r) for r in self._connection().execute(sql, args)]

    def update_job(self, job_id: str, **fields: Any) -> None:
        """Set some columns of a job (JSON columns take Python values)."""
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ConfigError(f"Cannot update job columns {sorted(unknown)}.")
        if not fields:
            return
        values = []
        for name, value in fields.items():
            if isinstance(value, JobState):
                value = value.value
            elif name in _JSON_COLUMNS and value is not None:
                value = json.dumps(value)
            elif name == "cancel_requested":
                value = int(bool(value))
            values.append(value)
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._write() as db:
            db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*values, job_id))

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
        **fields: Any,
    ) -> bool:
        """Change a job's state (and columns), with its event, atomically.

        With ``only_from``, nothing happens unless the job is in one of those states (returns
        False): a cancelled job cannot be marked succeeded by a runner that finished late.
        """
        now = time.time()
        with self._write() as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise StateError(f"No job {job_id!r}.")
            if only_from is not None and JobState(row["status"]) not in set(only_from):
                return False
            columns: dict[str, Any] = {"status": status.value}
            if status.terminal:
                columns["finished_at"] = now
            for name, value in fields.items():
                if name not in _UPDATABLE:
                    raise ConfigError(f"Cannot update job column {name!r}.")
                if name in _JSON_COLUMNS and value is not None:
                    value = json.dumps(value)
                elif name == "cancel_requested":
                    value = int(bool(value))
                columns[name] = value
            assignments = ", ".join(f"{name} = ?" for name in columns)
            db.execute(
                f"UPDATE jobs SET {assignments} WHERE id = ?",
                (*columns.values(), job_id),
            )
            if event is not None:
                self._append(db, job_id, event, message, dict(data or {}), now, level)
        return True

    def request_cancel(self, job_id: str, reason: str | None) -> JobRecord | None:
        """Mark a job for cancellation; a job that has not started is cancelled at once.

        Returns the job after the change (None when it does not exist).
        """
        now = time.time()
        with self._write() as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            state = JobState(row["status"])
            if not state.terminal:
                db.execute(
                    "UPDATE jobs SET cancel_requested = 1, cancel_reason = ? WHERE id = ?",
                    (reason, job_id),
                )
                self._append(
                    db, job_id, "job.cancel_requested", reason or "cancel requested", {}, now
                )
                if state in (JobState.PENDING, JobState.QUEUED):
                    db.execute(
                        "UPDATE jobs SET status = ?, finished_at = ? WHERE id = ?",
                        (JobState.CANCELLED.value, now, job_id),
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
        db: sqlite3.Connection,
        job_id: str,
        type_: str,
        message: str,
        data: Mapping[str, Any],
        ts: float,
        level: str = "info",
    ) -> int:
        row = db.execute("SELECT last_seq FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise StateError(f"No job {job_id!r}.")
        seq = int(row["last_seq"]) + 1
        db.execute("UPDATE jobs SET last_seq = ? WHERE id = ?", (seq, job_id))
        db.execute(
            "INSERT INTO events (job_id, seq, type, ts, level, message, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (job_id, seq, type_, ts, level, message, json.dumps(dict(data), default=repr)),
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
        rows = self._connection().execute(
            "SELECT * FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (job_id, int(since_seq), int(limit)),
        )
        return [
            StoredEvent(
                job_id=r["job_id"],
                seq=r["seq"],
                type=r["type"],
                ts=r["ts"],
                level=r["level"],
                message=r["message"],
                data=json.loads(r["data"]),
            )
            for r in rows
        ]
