"""Running one job in a child process, so that its Python work never slows the server.

The job server answers status, list and event requests on one event loop; an optimizer running
in the same process (rollout threads, event writes, proposal parsing) holds the GIL often
enough to push those answers to seconds under load. With ``isolation="process"`` the runner's
worker thread starts one child per job (``spawn``: a fresh interpreter, nothing inherited from
the server's threads) at a lower CPU priority (the runner's ``job_niceness``, 10 by default: a
burst of requests then slows the jobs rather than the reverse; so does any other load on the
machine, and 0 turns it off), and waits for it; the child opens the same job database
(SQLite in WAL mode: the server's reads never wait for it; or PostgreSQL), runs the job exactly
as a thread would, under the server's replica id and lease, and reports how it ended.

Stopping: on SIGTERM the child exits at once with :data:`EXIT_INTERRUPTED` (no new rollout
starts after the signal; the finished ones are in the journal) and the job resumes from its
journal on the next start or on another replica. Cancelling writes the run dir's ``STOP``
file, as in a thread, so the optimizer stops at its next check and keeps its partial result;
a child still running :data:`CANCEL_GRACE_S` seconds later (a rollout that hangs or drips)
is killed, and the job ends cancelled with its finished rollouts journaled. The factories
given to the runner must be picklable (module-level callables).

Memory: with the policy's ``max_job_memory_mib`` the server reads the child's resident memory
every :data:`MEMORY_POLL_S` seconds and kills a child past the limit (the job fails with "the
job exceeded the memory limit of N MiB"); the child's data segment is also capped by the
kernel (``RLIMIT_DATA``, twice the limit), so one allocation too large to be seen in time
fails in the child (a ``MemoryError``) instead of taking the machine's memory.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from multiprocessing.connection import Connection

    from policyopt.remote.server.runner import JobRunner
    from policyopt.remote.store import JobRecord

__all__ = [
    "CANCEL_GRACE_S",
    "EXIT_INTERRUPTED",
    "kill_after",
    "resident_bytes",
    "run_in_child",
]

#: the exit code of a job process stopped by SIGTERM (the job goes back to the queue)
EXIT_INTERRUPTED = 75
#: seconds a cancelled job's process gets to stop by itself before it is killed
CANCEL_GRACE_S = 2.0
#: seconds between two reads of a job process's memory (with a memory limit)
MEMORY_POLL_S = 0.1
#: the kernel's cap on a job process's data segment, as a multiple of its memory limit
DATA_LIMIT_FACTOR = 2


def run_in_child(runner: JobRunner, job: JobRecord, job_dir: Path) -> tuple[str, str]:
    """Run a claimed job in a child process; its outcome as :meth:`JobRunner.outcome` gives it."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    spec = {
        "db_url": runner.store.url.render_as_string(hide_password=False),
        "replica_id": runner.replica_id,
        "data_dir": str(runner.data_dir),
        "policy": runner.policy,
        "secret": runner.secret,
        "factories": runner.factories,
        "health_check": runner.health_check,
        "parent_pid": os.getpid(),
        # the runner's own class, pickled by reference: the child builds its runner from it, so
        # this module never imports policyopt.remote.server.runner (which imports this one)
        "runner_class": type(runner),
    }
    child = context.Process(
        target=_child_main,
        args=(spec, job.id, send),
        name=f"policyopt-{job.id}",
        daemon=True,  # ends with the server on a normal exit; _die_with_parent covers SIGKILL
    )
    with runner.child_process(job.id, child):
        child.start()
        with contextlib.suppress(OSError, AttributeError):  # not on every platform
            # at once, from here: the child's start-up (imports) already yields to requests
            if child.pid is not None and runner.job_niceness:
                mine = os.getpriority(os.PRIO_PROCESS, 0)
                os.setpriority(os.PRIO_PROCESS, child.pid, mine + runner.job_niceness)
        send.close()
        over = _wait(child, runner.policy.max_job_memory_mib)
    outcome: tuple[str, str] | None = None
    if receive.poll():
        try:
            outcome = receive.recv()
        except (EOFError, OSError):
            outcome = None
    receive.close()
    if over is not None:
        return "error", (
            f"the job exceeded the memory limit of {runner.policy.max_job_memory_mib} MiB "
            f"(its process used {over >> 20} MiB) and was stopped"
        )
    if outcome is not None:
        return outcome
    if runner.stopping or child.exitcode in (EXIT_INTERRUPTED, -signal.SIGTERM):
        return "interrupted", ""
    return "error", f"the job's process ended without a result (exit code {child.exitcode})"


def _wait(child: Any, limit_mib: int | None) -> int | None:
    """Wait for the job process to end; with a limit, kill it once its resident memory is
    past ``limit_mib`` and return what it used (bytes), else None."""
    if limit_mib is None:
        child.join()
        return None
    limit = limit_mib << 20
    while True:
        child.join(MEMORY_POLL_S)
        if not child.is_alive():
            return None
        used = resident_bytes(child.pid)
        if used is not None and used > limit:
            with contextlib.suppress(Exception):
                child.kill()
            child.join()
            return used


def resident_bytes(pid: int) -> int | None:
    """The resident memory of a process in bytes (Linux ``/proc``; None where unknown)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _limit_data(limit_mib: int | None) -> None:
    """Cap this process's data segment (heap and private mappings) at
    :data:`DATA_LIMIT_FACTOR` times the job's memory limit: past it an allocation fails."""
    if limit_mib is None:
        return
    with contextlib.suppress(ImportError, OSError, ValueError):  # not on every platform
        import resource

        cap = DATA_LIMIT_FACTOR * (limit_mib << 20)
        resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))


def kill_after(runner: JobRunner, job_id: str, seconds: float = CANCEL_GRACE_S) -> None:
    """Interrupt the process of a cancelled job now (SIGUSR1: it ends its run as after
    Ctrl-C, abandoning LM calls and rollouts in flight, and keeps its result so far), and kill
    it if it still runs ``seconds`` from now."""
    first = runner.child_of(job_id)
    if first is not None and first.pid is not None:
        with contextlib.suppress(OSError):
            os.kill(first.pid, signal.SIGUSR1)

    def kill() -> None:
        child = runner.child_of(job_id)
        if child is not None and child.is_alive():
            with contextlib.suppress(Exception):
                child.kill()

    timer = threading.Timer(seconds, kill)
    timer.daemon = True
    timer.start()


def _die_with_parent(parent_pid: int) -> None:
    """End this child when the server dies, even by SIGKILL (``daemon=True`` only covers a
    normal exit): otherwise an orphaned job keeps paying rollouts into the journal while the
    restarted server resumes the same job, and finished rollouts are paid twice."""
    with contextlib.suppress(OSError, AttributeError):  # Linux: the kernel does it
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the server died before the line above
        os._exit(1)

    def watch() -> None:  # elsewhere (and as a second line): poll for a new parent
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="policyopt-parent-watch", daemon=True).start()


def _child_main(spec: dict[str, Any], job_id: str, send: Connection) -> None:
    """The child: run one job with its own store connection and report the outcome."""
    _die_with_parent(int(spec["parent_pid"]))
    _limit_data(spec["policy"].max_job_memory_mib)
    from policyopt.remote.store import JobStore

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the server, which decides
    store = JobStore(spec["db_url"])
    reflection_factory, task_factory = spec["factories"]
    runner = spec["runner_class"](
        store,
        spec["data_dir"],
        max_concurrent_jobs=1,
        reflection_lm_factory=reflection_factory,
        task_app_factory=task_factory,
        health_check=spec["health_check"],
        policy=spec["policy"],
        secret=spec["secret"],
        replica_id=spec["replica_id"],  # ends the job only while the lease is the server's
    )
    job_dir = Path(spec["data_dir"]) / job_id

    def stop(signum: int, frame: Any) -> None:  # no new rollout starts after the signal
        os._exit(EXIT_INTERRUPTED)

    def cancel(signum: int, frame: Any) -> None:  # the job was cancelled: end it as Ctrl-C does
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGUSR1, cancel)
    try:
        job = store.get_job(job_id)
        if job is None:
            send.send(("error", f"job {job_id} is not in the database"))
            return
        try:
            send.send(runner.outcome(job, job_dir))
        except KeyboardInterrupt:  # cancelled before the run had a result to keep
            send.send(("interrupted", ""))
    finally:
        send.close()
        store.close()
