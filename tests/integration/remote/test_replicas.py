"""Two job-server replicas on one store (a SQLite file, or a real PostgreSQL server started
here): SIGKILL the one running a job, the other resumes it from the shared run dir.

Everything runs as real processes on 127.0.0.1: the two servers (what ``policyopt serve``
builds, with jobs in threads and the scripted keyword reflection LM: a model, even a fake one
behind litellm, or a job process costs tens of seconds of imports on a loaded machine)
and a keyword task app that logs every rollout it finishes. The task app's log is the ground
truth: a rollout served twice was paid twice (at most the ones in flight at the kill), a
rollout served but missing from the journal was lost (its result died with the replica).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from policyopt.remote.client import PolicyOptimizationJob
from policyopt.types import prompt_key
from tests.integration.remote.postgres import PostgresServer, postgres_server
from tests.integration.remote.replica_apps import served_rollouts
from tests.integration.remote.support import (
    OWNER_KEY,
    ServedProcess,
    job_config,
    journal_keys,
    wait_for,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(420),
    pytest.mark.waits,
]

ROOT = Path(__file__).resolve().parents[3]
TASK_KEY = "replica-task-key"
LEASE_S = 3
MAX_ROLLOUTS = 150
N_JOBS = 2  # rollouts in flight per job (job_config's GEPA section)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture
def task_app(tmp_path: Path) -> Iterator[ServedProcess]:
    log = tmp_path / "rollouts.jsonl"
    code = (
        "import uvicorn\n"
        "from tests.integration.remote.replica_apps import logged_keyword_app\n"
        f"uvicorn.run(logged_keyword_app({TASK_KEY!r}, {str(log)!r}), host='127.0.0.1', "
        "port={port}, log_level='warning')\n"
    )
    app = ServedProcess(
        lambda port: [sys.executable, "-c", code.format(port=port)], tmp_path / "task.log", ROOT
    )
    app.rollout_log = log  # type: ignore[attr-defined]
    try:
        app.wait_healthy({"Authorization": f"Bearer {TASK_KEY}"}, timeout=150)
        yield app
    finally:
        app.stop()


def start_replica(name: str, db: str, root: Path, isolation: str) -> ServedProcess:
    """A server process as replica ``name`` on the shared database and data dir."""
    code = (
        "from tests.integration.remote.replica_apps import serve_replica\n"
        f"serve_replica({{port}}, {db!r}, {str(root / 'runs')!r}, {name!r}, {LEASE_S}, "
        f"{isolation!r})\n"
    )
    replica = ServedProcess(
        lambda port: [sys.executable, "-c", code.format(port=port)], root / f"{name}.log", ROOT
    )
    try:
        replica.wait_healthy(timeout=150)  # imports take a minute on a machine at load 20
    except BaseException:
        replica.stop()
        raise
    return replica


def config(task_url: str, tag: str) -> dict[str, Any]:
    out = job_config(url=task_url, task_key=TASK_KEY, max_rollouts=MAX_ROLLOUTS, n_test=0)
    # the seed differs per job, so no (prompt, example) is shared between the two jobs
    out["policy_optimization"]["initial_prompt"] = f"Solve the task ({tag})."
    return out


def started_on(job: PolicyOptimizationJob) -> list[str]:
    """The replicas that started the job, in order (from its event stream)."""
    return [
        e.data.get("replica", "") for e in job.get_events(limit=5000) if e.type == "job.started"
    ]


def kill_one_replica_mid_job(
    db: str, root: Path, task_app: ServedProcess, isolation: str
) -> dict[str, int]:
    """Two replicas, two jobs; SIGKILL the replica running the first job once it has paid 24
    rollouts; the other finishes both. Checks the results; returns the counts."""
    replicas: dict[str, ServedProcess] = {}
    try:
        replicas["A"] = start_replica("A", db, root, isolation)
        replicas["B"] = start_replica("B", db, root, isolation)
        ids = []
        for name, tag in (("A", "first"), ("B", "second")):
            with PolicyOptimizationJob.from_dict(
                config(task_app.url, tag), replicas[name].url, OWNER_KEY
            ) as job:
                ids.append(job.submit())
        first = ids[0]
        with PolicyOptimizationJob.from_job_id(first, replicas["A"].url, OWNER_KEY) as job:
            victim = wait_for(lambda: (started_on(job) or [None])[0], timeout=60)
        run_dir = root / "runs" / first
        # mid-batch (12 val + 3 + 3 minibatch rollouts come first): some rollouts are in flight
        wait_for(lambda: len(journal_keys(run_dir)) >= 24, timeout=90, every=0.01)
        replicas[victim].kill()  # SIGKILL by PID: no clean-up, leases left to expire
        before = journal_keys(run_dir)
        survivor = "B" if victim == "A" else "A"
        results = {}
        for job_id in ids:
            with PolicyOptimizationJob.from_job_id(
                job_id, replicas[survivor].url, OWNER_KEY
            ) as job:
                results[job_id] = job.stream_until_complete(timeout=150)
                events = job.get_events(limit=5000)
                starts = started_on(job)
            assert results[job_id].succeeded, results[job_id].error
            assert [e.seq for e in events] == list(range(1, len(events) + 1))  # one stream
            assert results[job_id].progress.rollouts_used <= MAX_ROLLOUTS
            if job_id == first:
                requeued = [e for e in events if e.type == "job.requeued"]
                assert requeued and requeued[0].data["previous_replica"] == victim
                assert requeued[0].data["by_replica"] == survivor
                assert starts == [victim, survivor], starts
                resumed = [e.data["resumed_rollouts"] for e in events if e.type == "run.started"]
                assert resumed[-1] >= len(before)
    finally:
        for replica in replicas.values():
            replica.stop()
    after = journal_keys(run_dir)
    assert after[: len(before)] == before and len(after) == len(set(after))
    journaled: set[tuple[str, str]] = set()
    n_journaled = 0
    for job_id in ids:
        keys = journal_keys(root / "runs" / job_id)
        assert len(keys) == len(set(keys))  # no rollout journaled twice
        n_journaled += len(keys)
        journaled.update((prompt, example) for prompt, _split, example in keys)
    # the journal names prompts by content hash
    served = [(prompt_key(p), e) for p, e in served_rollouts(task_app.rollout_log)]  # type: ignore[attr-defined]
    counts = {
        "served": len(served),
        "journaled": n_journaled,
        "journaled_before_kill": len(before),
        "repeated": len(served) - len(set(served)),
        "lost": len(set(served) - journaled),
    }
    print(f"\nreplica kill counts ({'postgres' if '://' in db else 'sqlite'}): {counts}")
    in_flight = 2 * N_JOBS  # both jobs may have been on the killed replica
    assert counts["repeated"] <= in_flight, counts
    assert counts["lost"] <= in_flight, counts
    assert journaled <= set(served)  # every journaled rollout was really served
    return counts


def test_sqlite_replicas_survive_a_sigkill(tmp_path: Path, task_app: ServedProcess) -> None:
    # jobs in the replicas' threads: with ``--isolation process`` (the serve default) each job
    # process spends ~35 s importing at load 16, and this test took 188 s with the same counts
    kill_one_replica_mid_job(str(tmp_path / "jobs.db"), tmp_path, task_app, "thread")


def test_postgres_replicas_survive_a_sigkill(
    tmp_path: Path, task_app: ServedProcess, postgres: PostgresServer
) -> None:
    db = postgres.fresh_database("replicas_kill")
    kill_one_replica_mid_job(db, tmp_path, task_app, "thread")
