"""Cancelling a job that runs on one of the server's own threads (``isolation="thread"``).

A thread cannot be killed. A cancel first writes the run's ``STOP`` file (the search ends at
its next check); if the search still runs :data:`FIRST_STOP_S` later (rollouts hang while the
seed prompt is scored, before the ``STOP`` file counts), it does what Ctrl-C does to a local
run: it raises :class:`JobCancelled` (a ``KeyboardInterrupt``) in the job's thread, only while
that thread is in the search (between its ``RunStarted`` and ``RunFinished`` events, so never
while the run opens or closes its journal) or the test scoring, never in the writes of its
end. The rollout engine waits for rollouts in short polls, so the exception lands within about
0.1 s whatever the rollouts in flight do (hang, drip, huge answers): the engine cancels them,
the optimizer ends its run with the result it has (the run kit's rule for Ctrl-C) and the
runner records the job cancelled with that partial result; the finished rollouts are in the
journal.

A thread blocked inside one call that does not return to Python (an LM call stuck in a socket
read) gets the exception only when that call returns: if the job still runs
:data:`THREAD_CANCEL_GRACE_S` seconds after the cancel, ``give_up`` is called (the runner ends
the job cancelled and stops recording the thread's writes), and the thread is left to end by
itself when its call returns.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["FIRST_STOP_S", "THREAD_CANCEL_GRACE_S", "JobCancelled", "JobThreads"]

#: seconds a cancelled job's ``STOP`` file gets to end its search at a check (its stop reason
#: is then ``stop_file``) before its thread is interrupted
FIRST_STOP_S = 0.5
#: seconds a cancelled job's thread gets to stop before the job is ended without it
THREAD_CANCEL_GRACE_S = 3.0


class JobCancelled(KeyboardInterrupt):
    """Raised in a job's thread when the job is cancelled: the run ends as after Ctrl-C."""


class JobThreads:
    """The jobs running on this process's threads, and the cancel that interrupts them."""

    def __init__(
        self, grace_s: float = THREAD_CANCEL_GRACE_S, first_stop_s: float = FIRST_STOP_S
    ) -> None:
        self.grace_s = grace_s
        self.first_stop_s = first_stop_s
        self._lock = threading.Lock()
        self._jobs: set[str] = set()  # jobs in run()
        self._inside: dict[str, int] = {}  # job id -> its thread, while in interruptible()
        self._armed: set[str] = set()  # jobs whose thread may be interrupted now
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
    def interruptible(self, job_id: str, *, armed: bool = True) -> Iterator[None]:
        """Where a cancel may interrupt the job's thread (a cancel already asked interrupts it
        on entry). ``armed=False``: only once :meth:`gate` saw the run start, and no longer
        once it saw the run finish: never while the run opens or closes its journal."""
        with self._lock:
            if job_id in self._cancelled:
                raise JobCancelled
            self._inside[job_id] = threading.get_ident()
            if armed:
                self._armed.add(job_id)
        try:
            yield
        finally:
            with self._lock:
                self._inside.pop(job_id, None)
                self._armed.discard(job_id)

    def gate(self, job_id: str) -> Callable[[Any], None]:
        """A run listener that arms the job's interrupt at ``RunStarted`` and disarms it at
        ``RunFinished`` (the run's journal is open and closed outside those two events)."""
        from policyopt.events import RunFinished, RunStarted

        def listen(event: Any) -> None:
            if isinstance(event, (RunStarted, RunFinished)):
                with self._lock:
                    if isinstance(event, RunStarted) and job_id in self._inside:
                        self._armed.add(job_id)
                    else:
                        self._armed.discard(job_id)

        return listen

    def running(self, job_id: str) -> bool:
        """Whether the job's thread is still in :meth:`run`."""
        with self._lock:
            return job_id in self._jobs

    def cancel(self, job_id: str, give_up: Callable[[], None]) -> None:
        """Interrupt the job's thread if its ``STOP`` file has not ended the search within
        :attr:`first_stop_s`, and call ``give_up()`` if the thread still runs the job
        :attr:`grace_s` seconds from now (see the module docstring)."""
        with self._lock:  # a job not yet in its search is interrupted as it enters it
            if job_id in self._cancelled:
                return
            self._cancelled.add(job_id)

        def interrupt() -> None:  # as soon as the run is armed, while the job runs here
            deadline = time.monotonic() + self.grace_s
            while time.monotonic() < deadline:
                with self._lock:
                    if job_id not in self._jobs and job_id not in self._cancelled:
                        return
                    ident = self._inside.get(job_id)
                    if ident is not None and job_id in self._armed:
                        # raised in that thread at its next Python instruction
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(
                            ctypes.c_ulong(ident), ctypes.py_object(JobCancelled)
                        )
                        return
                time.sleep(0.05)

        def later() -> None:
            if self.running(job_id):
                give_up()

        for delay, action in ((self.first_stop_s, interrupt), (self.grace_s, later)):
            timer = threading.Timer(delay, action)
            timer.daemon = True
            timer.start()
