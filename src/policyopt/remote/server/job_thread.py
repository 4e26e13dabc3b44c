"""Cancelling a job that runs on one of the server's own threads (``isolation="thread"``).

A thread cannot be killed, and an exception raised into it from outside could land while its
run writes its journal (rollouts and LM calls in flight finish after it). So a cancel writes
the run's ``STOP`` file (the search ends at its next check: at once once the seed prompt is
scored, its rollouts in flight cancelled); a cancel that arrives before the search starts ends
the job as the search is entered; and a job still running :data:`THREAD_CANCEL_GRACE_S` seconds
after the cancel (rollouts that hang while the seed prompt is scored, an LM call that never
returns) is ended without its thread: ``give_up`` is called (the runner ends the job cancelled,
its finished rollouts in the journal, and stops recording the thread's writes), and the thread
ends by itself when its calls return (the rollout timeout bounds that), starting no rollout
past its ``STOP`` file. Jobs in child processes (what ``policyopt serve`` runs) are interrupted
and killed instead (:mod:`policyopt.remote.server.job_process`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["THREAD_CANCEL_GRACE_S", "JobCancelled", "JobThreads"]

#: seconds a cancelled job's thread gets to stop before the job is ended without it
THREAD_CANCEL_GRACE_S = 3.0


class JobCancelled(KeyboardInterrupt):
    """Raised in a job's own thread when it enters its search after a cancel."""


class JobThreads:
    """The jobs running on this process's threads, and what a cancel does to them."""

    def __init__(self, grace_s: float = THREAD_CANCEL_GRACE_S) -> None:
        self.grace_s = grace_s
        self._lock = threading.Lock()
        self._jobs: set[str] = set()  # jobs in run()
        self._cancelled: set[str] = set()

    def run(self, job_id: str, body: Callable[[], tuple[str, str]]) -> tuple[str, str]:
        """``body()`` (the job's run) on this thread; ``("cancelled", "")`` when a cancel
        ended it before it had a result to give."""
        try:
            with self._lock:
                self._jobs.add(job_id)
            try:
                return body()
            finally:
                with self._lock:
                    self._jobs.discard(job_id)
                    self._cancelled.discard(job_id)
        except JobCancelled:
            return "cancelled", ""

    @contextmanager
    def interruptible(self, job_id: str) -> Iterator[None]:
        """Enter the job's search or test scoring: not at all once the job was cancelled."""
        with self._lock:
            if job_id in self._cancelled:
                raise JobCancelled
        yield

    def running(self, job_id: str) -> bool:
        """Whether the job's thread is still in :meth:`run`."""
        with self._lock:
            return job_id in self._jobs

    def cancel(self, job_id: str, give_up: Callable[[], None]) -> None:
        """Note the cancel (the job's search is not entered after it), and call ``give_up()``
        if the thread still runs the job :attr:`grace_s` seconds from now."""
        with self._lock:
            if job_id in self._cancelled:
                return
            self._cancelled.add(job_id)

        def later() -> None:
            if self.running(job_id):
                give_up()

        timer = threading.Timer(self.grace_s, later)
        timer.daemon = True
        timer.start()
