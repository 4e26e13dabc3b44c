"""Rollouts on a Dask cluster: ``backend="dask"`` (the current ``distributed.Client``),
``backend="dask://tcp://host:8786"`` (connect to that scheduler) or a ``Client`` object.

Each rollout is one ``client.submit`` of :func:`policyopt.rollout.worker.execute`, not a joblib
batch on joblib's dask backend, because that gives what the engine promises:

- **No silent hang.** Before the first rollout, :meth:`DaskRunner.preflight` loads ``evaluate``
  and an example on every worker and on the scheduler (``client.run``), and fails within seconds
  with the module and the worker that cannot import it. Without it, a worker that cannot unpickle
  a task drops its connection and the call waits forever (verified: no client-side error).
- **A killed worker loses nothing.** Dask reruns the tasks of a dead worker elsewhere (at least
  once); each rollout is one future whose result arrives here once, and only this process writes
  the journal, so a rerun never makes a second ``rollout`` record. The start is charged when the
  task is submitted, as for any process backend; a task that kills every worker it runs on ends
  as a failed rollout (``KilledWorker``), paid, never retried forever.
- **Per-rollout faults and stops.** One future per rollout: a lost rollout fails alone (a joblib
  batch would abort the whole ``Parallel`` call), and a stop request cancels what is queued.
  At most ``n_jobs`` rollouts are in flight (-1: the cluster's threads), so a stop wastes little.

Ray has no runner here: ``backend="ray"`` is joblib's Ray backend (call
``ray.util.joblib.register_ray()`` first).
"""

from __future__ import annotations

import contextlib
import pickle
import queue
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from policyopt.errors import ConfigError, MissingDependencyError, describe
from policyopt.rollout.worker import Outcome

__all__ = ["DASK_PREFIX", "DaskRunner", "connect", "is_dask", "local_cluster", "probe"]

#: a backend string ``dask://<scheduler address>`` connects to that scheduler
DASK_PREFIX = "dask://"
#: seconds to wait for a first worker before failing
WORKER_WAIT_S = 30.0
#: seconds to keep trying to reach a scheduler named by address before failing
CONNECT_TIMEOUT_S = 10.0
_POLL_S = 0.1  # how often a waiting batch looks at the cancel flag
_INSTALL_HINT = "Install the extra: pip install 'policyopt[dask]' (dask[distributed])."


def is_dask(backend: object) -> bool:
    """True for ``"dask"``, ``"dask://ADDRESS"`` or a ``distributed.Client``."""
    if isinstance(backend, str):
        return backend == "dask" or backend.startswith(DASK_PREFIX)
    return type(backend).__module__.startswith("distributed") and hasattr(backend, "submit")


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise MissingDependencyError(
            f"backend='dask' needs dask.distributed, which is not installed. {_INSTALL_HINT}"
        ) from exc
    return distributed


def local_cluster(n_workers: int = 2, threads_per_worker: int = 1, **kwargs: Any) -> Any:
    """A ``distributed.LocalCluster`` of worker processes on loopback only, no dashboard.

    (The scheduler's HTTP server binds a free loopback port, not 8787 on every interface, so
    several clusters on one machine do not collide.)
    """
    distributed = _distributed()
    options: dict[str, Any] = {
        "n_workers": n_workers,
        "threads_per_worker": threads_per_worker,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": None,
        "worker_dashboard_address": None,
        "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"},
    }
    return distributed.LocalCluster(**{**options, **kwargs})


def connect(backend: object) -> tuple[Any, bool]:
    """The ``Client`` a dask backend names, and whether we opened it (and so must close it)."""
    distributed = _distributed()
    if isinstance(backend, distributed.Client):
        return backend, False
    if backend == "dask":
        try:
            return distributed.Client.current(allow_global=True), False
        except ValueError:
            raise ConfigError(
                "backend='dask' needs a dask.distributed Client in this process: create one "
                "first (Client(LocalCluster()) or Client('tcp://host:8786')), or name the "
                "scheduler: backend='dask://tcp://host:8786'."
            ) from None
    address = str(backend)[len(DASK_PREFIX) :]
    if not address:
        raise ConfigError(
            f"The 'backend' parameter {backend!r} names no scheduler; write "
            "'dask://tcp://host:8786' (or 'dask' for the current Client)."
        )
    try:
        client = distributed.Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ConfigError(
            f"Cannot reach the Dask scheduler at {address!r} ({type(exc).__name__}: {exc}). "
            "Start one (dask scheduler --host HOST) or fix the address in backend='dask://...'."
        ) from None
    return client, True


def probe(blobs: list[tuple[str, bytes]]) -> dict[str, Any]:
    """Run on a worker (or the scheduler): unpickle each blob; the errors and our version."""
    from policyopt._version import __version__

    errors = []
    for what, blob in blobs:
        try:
            pickle.loads(blob)  # noqa: S301 - our own driver's pickle of evaluate / an example
        except Exception as exc:
            errors.append(f"{what}: {type(exc).__name__}: {exc}")
    return {"version": __version__, "errors": errors}


def _where(obj: object) -> str:
    """``module (path)`` of a function or an object's class, for error messages."""
    target = obj if callable(obj) and hasattr(obj, "__module__") else type(obj)
    module = getattr(target, "__module__", None) or "?"
    path = getattr(sys.modules.get(module), "__file__", None)
    return f"{module} ({path})" if path else module


class DaskRunner:
    """Submits rollouts to a Dask cluster, at most ``window`` at once; see the module doc."""

    def __init__(self, backend: object, evaluate: Callable[..., object], n_jobs: int) -> None:
        self.client, self._owned = connect(backend)
        self.evaluate = evaluate
        self.n_jobs = n_jobs
        self._checked: set[str] = set()
        self._pending: dict[str, Any] = {}

    @property
    def address(self) -> str:
        """The scheduler's address."""
        return str(self.client.scheduler.address)

    def window(self) -> int:
        """Rollouts in flight at once: ``n_jobs``, or every worker thread for -1."""
        if self.n_jobs > 0:
            return self.n_jobs
        return max(1, sum(self.client.nthreads().values()))

    # ---------------------------------------------------------------- preflight
    def preflight(self, example: object, label: str | None = None) -> None:
        """Check once per example type (or ``label``) that every worker and the scheduler load
        ``evaluate``, the example and policyopt; raise :class:`ConfigError` naming what failed
        where."""
        kind = label or f"an example ({type(example).__module__}.{type(example).__qualname__})"
        if kind in self._checked:
            return
        import cloudpickle

        try:
            self.client.wait_for_workers(1, timeout=WORKER_WAIT_S)
        except TimeoutError:
            raise ConfigError(
                f"The Dask cluster at {self.address} has no worker after {WORKER_WAIT_S:g} s; "
                f"start some (dask worker {self.address})."
            ) from None
        problems: list[str] = []
        # unpickling a reference to probe imports policyopt there (and fails inside the call)
        for where, answers in self._ask(pickle.loads, pickle.dumps(probe)):
            for name, answer in answers.items():
                if isinstance(answer, BaseException):
                    problems.append(
                        f"{where} {name} cannot import policyopt ({type(answer).__name__}: "
                        f"{answer}); install the same policyopt there"
                    )
        if not problems:
            blobs = [
                (f"evaluate from {_where(self.evaluate)}", cloudpickle.dumps(self.evaluate)),
                (f"{kind} from {_where(example)}", cloudpickle.dumps(example)),
            ]
            from policyopt._version import __version__

            for where, answers in self._ask(probe, blobs):
                for name, answer in answers.items():
                    if isinstance(answer, BaseException):
                        problems.append(f"{where} {name}: {type(answer).__name__}: {answer}")
                        continue
                    problems += [f"{where} {name} cannot load {e}" for e in answer["errors"]]
                    if answer["version"] != __version__:
                        problems.append(
                            f"{where} {name} runs policyopt {answer['version']}, this process "
                            f"{__version__}; install the same version there"
                        )
        if problems:
            also = "".join(f"\n  also: {p}" for p in problems[1:8])
            more = f"\n  ... and {len(problems) - 8} more" if len(problems) > 8 else ""
            raise ConfigError(
                f"Rollouts on the Dask cluster at {self.address} cannot start: {problems[0]}. "
                "Install the module of evaluate (and of the examples) on every worker and the "
                "scheduler, in the same environment as here, or ship a single-file module with "
                f"client.upload_file('path/to/module.py'); or use backend='threading'.{also}{more}"
            )
        self._checked.add(kind)

    def _ask(self, fn: Callable[..., Any], *args: Any) -> list[tuple[str, dict[str, Any]]]:
        """``fn(*args)`` on every worker and on the scheduler; exceptions are returned."""
        workers = self.client.run(fn, *args, on_error="return")
        try:
            scheduler: Any = self.client.run_on_scheduler(fn, *args)
        except Exception as exc:
            scheduler = exc
        return [("worker", workers), ("scheduler", {self.address: scheduler})]

    # ---------------------------------------------------------------- running
    def run(
        self,
        tasks: Iterator[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]],
        *,
        example: object,
        cancelled: Callable[[], bool],
    ) -> Iterator[Outcome]:
        """Submit ``(fn, args, kwargs)`` tasks (as ``joblib.delayed`` makes them, the rollout's
        index first), pulling the next one only when a slot frees; yield outcomes as they
        arrive. On a stop, what is still in flight is cancelled (paid, no result)."""
        self.preflight(example)
        arrived: queue.Queue[Any] = queue.Queue()
        pending = self._pending
        window = self.window()
        source = iter(tasks)
        more = True

        def top_up() -> None:
            nonlocal more
            while more and len(pending) < window:
                item = next(source, None)
                if item is None:
                    more = False
                    return
                fn, args, kwargs = item
                future = self.client.submit(
                    fn, *args, key=f"policyopt-rollout-{uuid.uuid4().hex}", pure=False, **kwargs
                )
                pending[future.key] = (future, args[0])
                future.add_done_callback(arrived.put)

        try:
            top_up()
            while pending:
                try:
                    future = arrived.get(timeout=_POLL_S)
                except queue.Empty:
                    if cancelled():
                        return
                    continue
                entry = pending.pop(future.key, None)
                if entry is None:
                    continue
                yield self._outcome(future, entry[1])
                if not cancelled():
                    top_up()
        finally:
            self._cancel_pending()

    def _outcome(self, future: Any, index: int) -> Outcome:
        """The rollout's :class:`Outcome`, or a failed one when Dask lost or killed it."""
        try:
            outcome = future.result()
        except Exception as exc:
            name = type(exc).__name__
            hint = (
                ": its worker died each time it ran it (does evaluate crash or exhaust the "
                "worker's memory?)"
                if name == "KilledWorker"
                else " (was the Dask cluster shut down?)"
                if name == "CancelledError"
                else ""
            )
            return Outcome(index, "error", None, f"Dask {name}: {exc}{hint}", 0.0)
        if not isinstance(outcome, Outcome):
            return Outcome(index, "error", None, f"Dask returned {describe(outcome)}", 0.0)
        return outcome

    def _cancel_pending(self) -> None:
        if self._pending:
            futures = [future for future, _ in self._pending.values()]
            self._pending.clear()
            # the cluster may be gone already: then there is nothing left to release
            with contextlib.suppress(Exception):
                self.client.cancel(futures)

    def close(self) -> None:
        """Cancel what is in flight; close the client when this runner opened it."""
        self._cancel_pending()
        if self._owned:
            self.client.close()
