"""One background writer per MLflow tracking URI: every MLflow call of a process happens there.

Listeners run on the optimizer's threads and must never wait on a tracking server, so they only
queue work. One daemon thread per store takes the queue in order, merges queued metrics and
params into ``log_batch`` calls, and is the only user of its ``MlflowClient`` (so SQLite stores
see one writer, and nested runs are created after their parent). The first MLflow failure is
logged once as a warning; from then on that store's work is dropped and the optimization goes on.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger("policyopt")

#: MLflow's limits for one ``log_batch`` call
_MAX_METRICS, _MAX_PARAMS, _MAX_TAGS = 1000, 100, 100
#: longest param value MLflow stores (longer values are cut, with a marker)
MAX_PARAM_CHARS = 6000


@dataclass(eq=False)
class RunHandle:
    """One MLflow run as the writer sees it: created by the writer, or given by id."""

    experiment: str | None = None  # name; None: the parent's experiment (or given by id)
    experiment_id: str | None = None
    run_name: str | None = None
    parent: RunHandle | None = None
    tags: dict[str, str] = field(default_factory=dict)
    artifact_root: str | None = None  # where a new experiment keeps its artifacts
    run_id: str | None = None
    # when the run started, as the caller saw it (the writer thread creates it later)
    start_ms: int = field(default_factory=lambda: now_ms())
    ready: threading.Event = field(default_factory=threading.Event)
    logged_params: dict[str, str] = field(default_factory=dict)

    def wait(self, timeout: float | None) -> str | None:
        """The run's id once the writer created it (``None``: not in time, or it failed)."""
        self.ready.wait(timeout)
        return self.run_id


@dataclass
class _Log:
    run: RunHandle
    metrics: list[tuple[str, float, int, int]]  # key, value, timestamp (ms), step
    params: dict[str, str]
    tags: dict[str, str]


@dataclass
class _Call:
    run: RunHandle
    what: str
    fn: Callable[[Any, str], None]  # (client, run_id)
    cleanup: Callable[[], None] | None = None


@dataclass
class _Create:
    run: RunHandle


@dataclass
class _Barrier:
    done: threading.Event


_STOP = object()


class Writer:
    """The queue and thread of one tracking URI (see the module docstring)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.users = 0
        self.broken = False
        self._queue: queue.Queue[Any] = queue.Queue()
        self._client: Any = None
        self._thread = threading.Thread(
            target=self._loop, name=f"policyopt-mlflow-{uri[:40]}", daemon=True
        )
        self._thread.start()

    # ------------------------------------------------------------------ producers
    def create(self, run: RunHandle) -> None:
        """Queue the creation of ``run`` (its experiment too, when missing)."""
        self._queue.put(_Create(run))

    def log(
        self,
        run: RunHandle,
        metrics: Sequence[tuple[str, float, int, int]] = (),
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        """Queue metrics ``(key, value, timestamp_ms, step)``, params and tags for ``run``."""
        kept = [m for m in metrics if math.isfinite(m[1])]
        if kept or params or tags:
            self._queue.put(_Log(run, kept, dict(params or {}), dict(tags or {})))

    def call(
        self,
        run: RunHandle,
        what: str,
        fn: Callable[[Any, str], None],
        cleanup: Callable[[], None] | None = None,
    ) -> None:
        """Queue ``fn(client, run_id)`` (artifacts, the end of the run); ``cleanup`` always runs."""
        self._queue.put(_Call(run, what, fn, cleanup))

    def wait(self, timeout: float | None) -> bool:
        """Block until everything queued so far is written (or dropped); False on timeout."""
        done = threading.Event()
        self._queue.put(_Barrier(done))
        return done.wait(timeout)

    def stop(self) -> None:
        """Let the thread end once the queue is empty."""
        self._queue.put(_STOP)

    # ------------------------------------------------------------------ the thread
    def _loop(self) -> None:
        while True:
            items = [self._queue.get()]
            with contextlib.suppress(queue.Empty):
                while len(items) < 2000:
                    items.append(self._queue.get_nowait())
            pending: dict[RunHandle, _Log] = {}
            stop = False
            for item in items:
                if isinstance(item, _Log):
                    batch = pending.setdefault(item.run, _Log(item.run, [], {}, {}))
                    batch.metrics += item.metrics
                    for key, value in item.params.items():
                        batch.params.setdefault(key, value)  # params are write-once
                    batch.tags.update(item.tags)
                    continue
                self._flush(pending)
                if item is _STOP:
                    stop = True
                elif isinstance(item, _Barrier):
                    item.done.set()
                elif isinstance(item, _Create):
                    self._guarded("starting a run", self._create, item.run)
                    item.run.ready.set()
                elif isinstance(item, _Call):
                    try:
                        run_id = item.run.run_id
                        if run_id is not None:
                            self._guarded(item.what, self._call, item.fn, run_id)
                    finally:
                        if item.cleanup is not None:
                            item.cleanup()
            self._flush(pending)
            if stop:
                return

    def _guarded(self, what: str, work: Callable[..., None], *args: Any) -> None:
        """Run ``work(*args)`` unless the store failed before; the first failure warns, once."""
        if self.broken:
            return
        try:
            if self._client is None:
                self._client = _client(self.uri)
            work(*args)
        except Exception as exc:  # tracking must never stop an optimization
            self.broken = True
            message = " ".join(str(exc).split())[:300] or type(exc).__name__
            logger.warning(
                "MLflow tracking to %s failed while %s (%s); the run goes on without tracking.",
                self.uri,
                what,
                message,
            )

    def _flush(self, pending: dict[RunHandle, _Log]) -> None:
        for run, batch in pending.items():
            if run.run_id is not None and not self.broken:
                self._guarded("logging metrics", self._log_batch, run, batch)
        pending.clear()

    def _call(self, fn: Callable[[Any, str], None], run_id: str) -> None:
        fn(self._client, run_id)

    def _create(self, run: RunHandle) -> None:
        client = self._client
        experiment_id = run.experiment_id
        if experiment_id is None and run.experiment is None and run.parent is not None:
            run.parent.ready.wait(5.0)  # created earlier in this same queue
            experiment_id = run.parent.experiment_id
        if experiment_id is None:
            name = run.experiment or "policyopt"
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                try:
                    experiment_id = client.create_experiment(
                        name, artifact_location=run.artifact_root
                    )
                except Exception:  # created meanwhile by another process
                    experiment = client.get_experiment_by_name(name)
                    if experiment is None:
                        raise
                    experiment_id = experiment.experiment_id
            else:
                experiment_id = experiment.experiment_id
        tags = dict(run.tags)
        if run.parent is not None and run.parent.run_id is not None:
            tags["mlflow.parentRunId"] = run.parent.run_id
        created = client.create_run(
            str(experiment_id), start_time=run.start_ms, run_name=run.run_name, tags=tags
        )
        run.experiment_id = str(experiment_id)
        run.run_id = created.info.run_id

    def _log_batch(self, run: RunHandle, batch: _Log) -> None:
        from mlflow.entities import Metric, Param, RunTag

        params = []
        for key, value in batch.params.items():
            if key in run.logged_params:
                if run.logged_params[key] != value:
                    logger.debug("MLflow param %s already logged; %r not logged", key, value)
                continue
            run.logged_params[key] = value
            params.append(Param(key, value))
        metrics = [Metric(k, float(v), ts, step) for k, v, ts, step in batch.metrics]
        tags = [RunTag(k, v) for k, v in batch.tags.items()]
        assert self._client is not None
        while metrics or params or tags:
            chunk_p, params = params[:_MAX_PARAMS], params[_MAX_PARAMS:]
            chunk_t, tags = tags[:_MAX_TAGS], tags[_MAX_TAGS:]
            room = _MAX_METRICS - len(chunk_p) - len(chunk_t)
            chunk_m, metrics = metrics[:room], metrics[room:]
            self._client.log_batch(run.run_id, metrics=chunk_m, params=chunk_p, tags=chunk_t)


def _client(uri: str) -> Any:
    """An ``MlflowClient`` for ``uri``, with MLflow's own INFO logging kept quiet.

    A server that is not listening fails here at once, not after MLflow's minutes of retries.
    """
    from mlflow.tracking import MlflowClient

    parts = urlsplit(uri)
    if parts.scheme in {"http", "https"} and parts.hostname:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((parts.hostname, port), timeout=10).close()

    if "MLFLOW_LOGGING_LEVEL" not in os.environ:
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


_writers: dict[str, Writer] = {}
_writers_lock = threading.Lock()


def acquire(uri: str) -> Writer:
    """The writer of ``uri`` (started on first use); pair with :func:`release`."""
    with _writers_lock:
        writer = _writers.get(uri)
        if writer is None:
            writer = _writers[uri] = Writer(uri)
        writer.users += 1
        return writer


def release(writer: Writer) -> None:
    """One user less; the last one lets the writer's thread end after its queue."""
    with _writers_lock:
        writer.users -= 1
        if writer.users <= 0 and _writers.get(writer.uri) is writer:
            del _writers[writer.uri]
            writer.stop()


def now_ms() -> int:
    """MLflow's timestamps: milliseconds since the epoch."""
    return int(time.time() * 1000)
