"""The shared job store for server replicas, on SQLite and on a real PostgreSQL server: atomic
claims, one event seq stream per job, leases (expiry, heartbeat, guards), quotas, errors.

Several ``JobStore`` objects on one database stand for several replica processes (each has
its own engine and connections). The PostgreSQL cases skip only when its binaries are absent.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from policyopt.errors import ConfigError, StateError
from policyopt.remote.store import JobState, JobStore
from tests.integration.remote.postgres import PostgresServer, postgres_server
from tests.integration.remote.support import free_port

pytestmark = pytest.mark.timeout(120)
_COUNTER = iter(range(1_000_000))


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty job database on each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "jobs.db")
    server: PostgresServer = request.getfixturevalue("pg_server")
    return server.fresh_database(f"t{next(_COUNTER)}_{int(time.time())}")


@pytest.fixture
def stores(db_url: str) -> Iterator[tuple[JobStore, JobStore]]:
    """Two stores on one database: two replicas."""
    one, two = JobStore(db_url), JobStore(db_url)
    try:
        yield one, two
    finally:
        one.close()
        two.close()


def queued(store: JobStore, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        job = store.create_job(owner="o", algorithm="gepa", config={})
        store.transition(job.id, JobState.QUEUED, event="job.queued")
        ids.append(job.id)
    return ids


def test_each_queued_job_is_claimed_by_exactly_one_replica(
    stores: tuple[JobStore, JobStore],
) -> None:
    ids = queued(stores[0], 16)
    claimed: list[tuple[str, str]] = []
    lock = threading.Lock()

    def worker(store: JobStore, name: str) -> None:
        while (job := store.claim(name, 30.0)) is not None:
            with lock:
                claimed.append((job.id, name))

    threads = [
        threading.Thread(target=worker, args=(store, f"{name}-{n}"))
        for name, store in zip("AB", stores, strict=True)
        for n in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(job_id for job_id, _ in claimed) == sorted(ids)  # each once, none lost
    for job_id, name in claimed:
        job = stores[1].get_job(job_id)
        assert job is not None and job.status is JobState.RUNNING
        assert job.lease_owner == name and job.attempts == 1
        assert job.lease_expires_at is not None and job.lease_expires_at > time.time()
    assert stores[0].claim("late", 30.0) is None


def test_event_seqs_stay_one_stream_across_replicas(stores: tuple[JobStore, JobStore]) -> None:
    job = stores[0].create_job(owner="o", algorithm="gepa", config={})

    def writer(store: JobStore) -> None:
        for i in range(25):
            store.append_event(job.id, "tick", {"i": i})

    threads = [threading.Thread(target=writer, args=(s,)) for s in (*stores, *stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    seqs = [e.seq for e in stores[1].events(job.id, limit=1000)]
    assert seqs == list(range(1, 102))  # job.created + 4 x 25, no gap, no repeat
    assert stores[0].get_job(job.id).last_seq == 101  # type: ignore[union-attr]


def test_lease_expiry_heartbeat_and_guards(stores: tuple[JobStore, JobStore]) -> None:
    a, b = stores
    (job_id,) = queued(a, 1)
    job = a.claim("A", 1.0)
    assert job is not None and job.id == job_id
    first = job.lease_expires_at
    assert first is not None
    time.sleep(0.05)
    (state,) = a.heartbeat("A", [job_id], 1.0)
    assert state.held and not state.cancel_requested and state.status is JobState.RUNNING
    renewed = a.get_job(job_id).lease_expires_at  # type: ignore[union-attr]
    assert renewed is not None and renewed > first
    assert not b.heartbeat("B", [job_id], 1.0)[0].held  # not B's lease: not renewed by B
    now = time.time()
    assert b.expired(now) == []
    assert not b.transition(
        job_id, JobState.QUEUED, only_from=[JobState.RUNNING], expired_before=now
    )
    later = now + 5.0  # as if the lease ran out (no heartbeat from A for 5 s)
    assert [j.id for j in b.expired(later)] == [job_id]
    assert b.transition(
        job_id,
        JobState.QUEUED,
        event="job.requeued",
        only_from=[JobState.RUNNING],
        expired_before=later,
    )
    requeued = b.get_job(job_id)
    assert requeued is not None and requeued.lease_owner is None
    assert requeued.lease_expires_at is None
    # a second replica reaping the same expiry changes nothing
    assert not a.transition(
        job_id, JobState.QUEUED, only_from=[JobState.RUNNING], expired_before=later
    )
    again = b.claim("B", 30.0)
    assert again is not None and again.lease_owner == "B" and again.attempts == 2
    # A, back from a stall, can neither end the job nor renew B's lease
    assert not a.transition(
        job_id,
        JobState.SUCCEEDED,
        event="job.succeeded",
        only_from=[JobState.RUNNING],
        holder="A",
    )
    (lost,) = a.heartbeat("A", [job_id], 30.0)
    assert not lost.held and lost.status is JobState.RUNNING
    assert b.transition(
        job_id,
        JobState.SUCCEEDED,
        event="job.succeeded",
        only_from=[JobState.RUNNING],
        holder="B",
    )
    done = a.get_job(job_id)
    assert done is not None and done.status is JobState.SUCCEEDED and done.lease_owner is None
    types = [e.type for e in a.events(job_id)]
    assert types == ["job.created", "job.queued", "job.requeued", "job.succeeded"]


def test_a_cancel_on_one_replica_reaches_the_holders_heartbeat(
    stores: tuple[JobStore, JobStore],
) -> None:
    a, b = stores
    (job_id,) = queued(a, 1)
    assert a.claim("A", 30.0) is not None
    after = b.request_cancel(job_id, "enough")
    assert after is not None and after.status is JobState.RUNNING and after.cancel_requested
    (state,) = a.heartbeat("A", [job_id], 30.0)
    assert state.held and state.cancel_requested
    assert a.heartbeat("A", [], 30.0) == []


def test_quota_usage_reads_json_on_both_backends(stores: tuple[JobStore, JobStore]) -> None:
    """Unfinished jobs hold their caps (rollouts, dollars, optimizer-LM calls); finished ones
    are charged what they spent, or their cap where that is not known (a failed job)."""
    a, _ = stores
    config = {"budget": {"max_rollouts": 50, "max_cost_usd": 2.5}}
    calls = {"lm_calls": 40}
    running = a.create_job(
        owner="k", algorithm="gepa", config=config, max_rollouts=50, reserved=calls
    )
    a.transition(running.id, JobState.RUNNING)
    done = a.create_job(owner="k", algorithm="gepa", config=config, max_rollouts=50, reserved=calls)
    a.transition(
        done.id,
        JobState.SUCCEEDED,
        progress={"rollouts_used": 20, "max_rollouts": 50},
        results={"usage": {"cost_usd": 0.25, "lm_calls": 9}},
    )
    capped = a.create_job(
        owner="k", algorithm="gepa", config=config, max_rollouts=50, reserved={"lm_calls": 30}
    )
    a.transition(capped.id, JobState.FAILED, progress={"rollouts_used": 7, "max_rollouts": 50})
    a.create_job(owner="someone-else", algorithm="gepa", config=config, max_rollouts=99)
    usage = a.usage("k")
    assert usage == {
        "active": 1,
        "rollouts": 50 + 20 + 7,
        "cost_usd": pytest.approx(5.25),
        "lm_calls": 40 + 9 + 30,
    }
    assert a.get_job(running.id).reserved == calls  # type: ignore[union-attr]
    assert a.usage("nobody") == {"active": 0, "rollouts": 0, "cost_usd": 0.0, "lm_calls": 0}
    assert a.count_jobs([JobState.RUNNING, JobState.PENDING]) == 2


def test_quota_usage_counts_test_split_rollouts(stores: tuple[JobStore, JobStore]) -> None:
    """A job with budget 20 ran 1,000 test rollouts uncharged: an unfinished job now holds
    its budget plus 2 per test id (the seed and the best prompt), a finished one what its
    test scoring used."""
    a, _ = stores
    config = {"budget": {"max_rollouts": 20}, "test_ids": [f"x{i}" for i in range(500)]}
    a.create_job(owner="k", algorithm="gepa", config=config, max_rollouts=20)
    assert a.usage("k")["rollouts"] == 20 + 2 * 500
    done = a.create_job(owner="d", algorithm="gepa", config=config, max_rollouts=20)
    a.transition(
        done.id,
        JobState.SUCCEEDED,
        progress={"rollouts_used": 20, "max_rollouts": 20},
        results={"usage": {"test_rollouts": 1000}},
    )
    assert a.usage("d")["rollouts"] == 20 + 1000


def test_database_urls_and_their_errors(tmp_path: Path) -> None:
    for bad, needle in (
        ("mysql://u@127.0.0.1/db", "unsupported database 'mysql'"),
        ("sqlite://", "names no SQLite file"),
        (":memory:", "database file"),
    ):
        with pytest.raises(ConfigError, match=needle):
            JobStore(bad)
    started = time.monotonic()
    port = free_port()
    nobody = f"postgresql://policyopt@127.0.0.1:{port}/jobs"
    with pytest.raises(StateError, match="not a usable job database") as caught:
        JobStore(nobody)
    assert time.monotonic() - started < 30
    assert "\n" not in str(caught.value) and f"127.0.0.1:{port}/jobs" in str(caught.value)
    store = JobStore(f"sqlite:///{tmp_path / 'by-url.db'}")
    try:
        assert store.path == tmp_path / "by-url.db" and store.dialect == "sqlite"
    finally:
        store.close()


_OLD_SCHEMA = """
CREATE TABLE jobs (id TEXT PRIMARY KEY, owner TEXT NOT NULL, algorithm TEXT NOT NULL,
    status TEXT NOT NULL, config TEXT NOT NULL, created_at REAL NOT NULL, started_at REAL,
    finished_at REAL, error TEXT, progress TEXT NOT NULL DEFAULT '{}', best_score REAL,
    best_prompt TEXT, results TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0,
    cancel_reason TEXT, attempts INTEGER NOT NULL DEFAULT 0, last_seq INTEGER NOT NULL DEFAULT 0);
CREATE TABLE events (job_id TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL,
    ts REAL NOT NULL, level TEXT NOT NULL, message TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)) WITHOUT ROWID;
CREATE TABLE api_keys (owner TEXT PRIMARY KEY, label TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1, created_at REAL NOT NULL);
INSERT INTO jobs (id, owner, algorithm, status, config, created_at, progress, best_prompt,
    last_seq) VALUES ('po_old', 'o', 'gepa', 'running', '{"a": 1}', 1.0,
    '{"rollouts_used": 3, "max_rollouts": 9}', '"Be brief."', 1);
INSERT INTO events VALUES ('po_old', 1, 'job.created', 1.0, 'info', 'job created', '{}');
"""


def test_a_database_of_the_single_server_era_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as raw:
        raw.executescript(_OLD_SCHEMA)
    raw.close()
    store = JobStore(path)
    try:
        job = store.get_job("po_old")
        assert job is not None and job.config == {"a": 1} and job.best_prompt == "Be brief."
        assert job.progress == {"rollouts_used": 3, "max_rollouts": 9}
        assert job.lease_owner is None and job.lease_expires_at is None
        assert [j.id for j in store.expired()] == ["po_old"]  # no lease: resumable at once
        assert store.append_event("po_old", "x") == 2
    finally:
        store.close()


def test_a_stored_infinity_never_locks_its_key_out_of_quota_checks(tmp_path: Path) -> None:
    """An older server stored budget.max_cost_usd = Infinity as JSON SQLite cannot read; every
    later quota check of that key failed (a 500 on each submit)."""
    store = JobStore(tmp_path / "jobs.db")
    try:
        config = {"budget": {"max_rollouts": 5, "max_cost_usd": float("inf")}}
        store.create_job(owner="k", algorithm="gepa", config=config, max_rollouts=5)
        good = {"budget": {"max_rollouts": 7, "max_cost_usd": 1.0}}
        store.create_job(owner="k", algorithm="gepa", config=good, max_rollouts=7)
        assert store.usage("k") == {"active": 1, "rollouts": 7, "cost_usd": 1.0, "lm_calls": 0}
    finally:
        store.close()


class _Full(Exception):
    """A quota refused the job (what the server answers 429)."""


def _submit_in_parallel(stores: tuple[JobStore, JobStore], per_store: int, admit: Any) -> int:
    """``per_store`` threads on each store submit one job at the same moment; how many got in."""
    start = threading.Barrier(2 * per_store)
    admitted: list[str] = []
    lock = threading.Lock()

    def submit(store: JobStore) -> None:
        start.wait(30)
        try:
            job = store.create_job(
                owner="k",
                algorithm="gepa",
                config={"budget": {"max_rollouts": 10}},
                max_rollouts=10,
                reserved={"lm_calls": 7},
                admit=admit,
            )
        except _Full:
            return
        with lock:
            admitted.append(job.id)

    threads = [
        threading.Thread(target=submit, args=(store,)) for store in stores for _ in range(per_store)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads)
    return len(admitted)


@pytest.mark.parametrize("quota", ["rollouts", "lm_calls"])
def test_parallel_submits_on_two_replicas_never_exceed_a_quota(
    stores: tuple[JobStore, JobStore], quota: str
) -> None:
    """The quota check and the insert are one transaction per key on every replica: 2 x 20
    submits at once, each asking 10 rollouts and 7 optimizer-LM calls, against a quota of 100
    rollouts (room for exactly 10 jobs) or 50 LM calls (room for exactly 7)."""
    cap, each = (100, 10) if quota == "rollouts" else (50, 7)
    seen: list[float] = []

    def admit(usage: Any) -> None:
        seen.append(usage[quota])
        time.sleep(0.002)  # widen the window between the check and the insert
        if usage[quota] + each > cap:
            raise _Full

    got = _submit_in_parallel(stores, 20, admit)
    assert got == cap // each
    assert stores[1].usage("k")[quota] == got * each <= cap
    assert sorted(seen)[: got + 1] == [n * each for n in range(got + 1)]  # each saw the last
