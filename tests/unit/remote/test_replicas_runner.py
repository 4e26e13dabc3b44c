"""Two job runners (replicas) on one SQLite store and one data dir, in one process: a cancel
asked of the replica that does not hold the job, a graceful hand-over between replicas, and a
replica that lost its lease (it must not end the job another replica now holds).

The kill of a whole replica process is in tests/integration/remote/test_replicas.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from policyopt.remote.server.runner import JobRunner
from policyopt.remote.store import JobState, JobStore
from tests.integration.remote.support import (
    ScriptedTaskApp,
    job_config,
    scripted_reflection,
    wait_for,
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    db = JobStore(tmp_path / "jobs.db")
    try:
        yield db
    finally:
        db.close()


def replica(store_path: Path, name: str, task: ScriptedTaskApp) -> JobRunner:
    """A started runner named ``name`` with its own store connection (as a process would)."""
    runner = JobRunner(
        JobStore(store_path),
        store_path.parent / "runs",
        max_concurrent_jobs=1,
        reflection_lm_factory=scripted_reflection,
        task_app_factory=task.factory,
        health_check=False,
        replica_id=name,
        lease_s=3.0,
        poll_s=0.05,
    )
    runner.start()
    return runner


def stop(*runners: JobRunner) -> None:
    for runner in runners:
        runner.shutdown(timeout=10)
        runner.store.close()


def submit(store: JobStore, runner: JobRunner, max_rollouts: int) -> str:
    config = job_config(max_rollouts=max_rollouts, n_test=0)["policy_optimization"]
    job = store.create_job(owner="o", algorithm="gepa", config=config, max_rollouts=max_rollouts)
    runner.submit(job.id)
    return job.id


def test_cancel_on_the_other_replica_stops_the_job(tmp_path: Path, store: JobStore) -> None:
    task = ScriptedTaskApp(delay=0.05)
    a = replica(tmp_path / "jobs.db", "A", task)
    b = None
    try:
        job_id = submit(store, a, max_rollouts=2000)
        wait_for(lambda: task.total >= 5, timeout=60)
        b = replica(tmp_path / "jobs.db", "B", task)
        assert store.get_job(job_id).lease_owner == "A"  # type: ignore[union-attr]
        b.cancel(job_id, "asked of B")
        asked = time.monotonic()
        wait_for(lambda: store.get_job(job_id).status.terminal, timeout=60)  # type: ignore[union-attr]
        took = time.monotonic() - asked
    finally:
        stop(a, *([b] if b else []))
    job = store.get_job(job_id)
    assert job is not None and job.status is JobState.CANCELLED, job
    assert job.results is not None  # the partial result is kept
    assert took < 30, took  # a heartbeat (1 s) plus the optimizer's next check
    started = [e.data["replica"] for e in store.events(job_id) if e.type == "job.started"]
    assert started == ["A"]


def test_a_replica_shutting_down_hands_its_job_to_another(tmp_path: Path, store: JobStore) -> None:
    task = ScriptedTaskApp(delay=0.02)
    a = replica(tmp_path / "jobs.db", "A", task)
    b = None
    try:
        job_id = submit(store, a, max_rollouts=120)
        wait_for(lambda: task.total >= 30, timeout=60)
        b = replica(tmp_path / "jobs.db", "B", task)
        a.shutdown(timeout=10)  # suspends the job: B claims it at once, no lease to wait out
        wait_for(lambda: store.get_job(job_id).status.terminal, timeout=90)  # type: ignore[union-attr]
    finally:
        stop(*([b] if b else []))
        a.store.close()
    job = store.get_job(job_id)
    assert job is not None and job.status is JobState.SUCCEEDED, job.error if job else None
    events = store.events(job_id, limit=5000)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    started = [e.data["replica"] for e in events if e.type == "job.started"]
    assert started == ["A", "B"]
    assert "job.suspended" in [e.type for e in events]
    assert max(task.calls.values()) == 1  # no (prompt, example) paid twice across replicas


def test_a_replica_that_lost_its_lease_cannot_end_the_job(tmp_path: Path, store: JobStore) -> None:
    task = ScriptedTaskApp(delay=0.05)
    a = replica(tmp_path / "jobs.db", "A", task)
    try:
        job_id = submit(store, a, max_rollouts=2000)
        wait_for(lambda: task.total >= 5, timeout=60)
        # another replica takes the job over (as after an expiry A missed, e.g. a long stall)
        store.update_job(job_id, lease_owner="B")
        wait_for(lambda: job_id not in a._running, timeout=30)  # A's heartbeat lets go
        job = store.get_job(job_id)
        assert job is not None and job.status is JobState.RUNNING and job.lease_owner == "B"
        types = [e.type for e in store.events(job_id, limit=5000)]
        assert not any(t in types for t in ("job.failed", "job.succeeded", "job.cancelled"))
    finally:
        stop(a)


def test_a_claimer_waits_for_a_stale_run_to_release_the_run_dir(
    tmp_path: Path, store: JobStore
) -> None:
    import fcntl

    task = ScriptedTaskApp(delay=0.01)
    config = job_config(max_rollouts=40, n_test=0)["policy_optimization"]
    job = store.create_job(owner="o", algorithm="gepa", config=config, max_rollouts=40)
    run_dir = tmp_path / "runs" / job.id
    run_dir.mkdir(parents=True)
    with (run_dir / ".lock").open("a+") as stale:  # a run on a replica that lost the job
        fcntl.flock(stale.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        (run_dir / "STOP").touch()  # what that replica wrote to stop its run
        b = replica(tmp_path / "jobs.db", "B", task)
        try:
            b.submit(job.id)
            wait_for(lambda: "job.waiting" in [e.type for e in store.events(job.id)], 60)
            time.sleep(1.0)
            assert task.total == 0  # nothing paid while the stale run holds the journal
            fcntl.flock(stale.fileno(), fcntl.LOCK_UN)
            wait_for(lambda: store.get_job(job.id).status.terminal, timeout=90)  # type: ignore[union-attr]
        finally:
            stop(b)
    done = store.get_job(job.id)
    assert done is not None and done.status is JobState.SUCCEEDED, done.error if done else None
    assert done.results is not None and done.results["stop_reason"] != "stop_file"


def test_which_lease_holders_count_as_dead_at_startup() -> None:
    import os
    import subprocess

    from policyopt.remote.server.leases import _dead_here, _host_tag, new_replica_id

    done = subprocess.Popen(["true"])
    done.wait()
    here = _host_tag()
    mine = new_replica_id()
    assert _dead_here(f"{here}/{done.pid}/abc123", mine)  # this host, process gone
    assert not _dead_here(f"{here}/{os.getppid()}/abc123", mine)  # alive
    assert not _dead_here(f"{here}/{os.getpid()}/abc123", mine)  # this process: can't tell
    assert not _dead_here(f"elsewhere/0000/{done.pid}/abc123", mine)  # another host: expiry
    assert not _dead_here("A", mine) and not _dead_here(None, mine) and not _dead_here(mine, mine)


def test_requeue_counts_the_journals_rollouts_through_its_reader(tmp_path: Path) -> None:
    """The count in a requeue message is of rollout records as the journal reader reads them:
    not a nested ``{"type": "rollout"}`` inside another record, not a torn last line."""
    from policyopt.remote.server.leases import _count_rollouts
    from policyopt.state.journal import Journal

    path = tmp_path / "journal.jsonl"
    assert _count_rollouts(path) == 0  # no journal yet
    journal = Journal(path)
    journal.append({"type": "start", "n": 0})
    journal.append({"type": "rollout", "n": 0, "score": 1.0})
    journal.append({"type": "step", "trace": {"type": "rollout"}})
    journal.close()
    with path.open("ab") as handle:
        handle.write(b'{"type":"rollout","n":1,"sco')  # a write cut by a SIGKILL
    assert _count_rollouts(path) == 1
