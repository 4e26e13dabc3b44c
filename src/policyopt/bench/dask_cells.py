"""Benchmark cells as Dask tasks (``policyopt bench --dask`` / ``--scheduler ADDRESS``).

Only the search-and-test of a cell moves to a worker; everything else stays in the driver, as
without Dask: the grid, the baselines, which cells are finished, writing ``cells/<cell>.json``
(one writer), the log and the report. So records, resumption and the report are exactly those of
a local run. A cell's ``runs/<cell>/`` state is written by the worker: on one machine (a
``LocalCluster``), or on a file system every worker shares, a cell cut by a dead worker resumes
from it when Dask reruns it elsewhere.

Models travel as recipes, not objects: the embedded model's server stays in the driver and the
workers reach it over loopback through litellm (so ``task_model=local`` needs workers on this
machine); a named litellm model is rebuilt on the worker; any other LM object (e.g. a scripted one
in tests) must pickle.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from policyopt.bench.cellrun import run_cell, versions
from policyopt.bench.records import CellKey, CellRecord, SplitScore
from policyopt.errors import ConfigError
from policyopt.lm.base import LM, LMLike
from policyopt.rollout.dask_backend import DASK_PREFIX, DaskRunner, connect, local_cluster
from policyopt.tasks.base import Task
from policyopt.types import LMUsage

__all__ = ["CellsOnDask", "DaskSession", "LMRecipe", "portable"]


class ServedLM(LM):
    """The embedded model's server reached from a worker: an :class:`LM` that costs nothing,
    as :class:`~policyopt.lm.local.LocalLM` reports it (so cost columns match a local run)."""

    def _cost(self, litellm: Any, response: Any) -> float | None:
        return 0.0


@dataclasses.dataclass(frozen=True)
class LMRecipe:
    """How a worker builds an :class:`LM` equal to the driver's (same model, server, settings)."""

    model: str
    kwargs: dict[str, Any]
    num_retries: int
    timeout: float | None
    max_concurrency: int | None
    cache: str | None
    free: bool = False  # the embedded model: no price

    def build(self) -> LM:
        """The LM, on the worker."""
        return (ServedLM if self.free else LM)(
            self.model,
            num_retries=self.num_retries,
            timeout=self.timeout,
            max_concurrency=self.max_concurrency,
            cache=self.cache or False,
            **self.kwargs,
        )


def portable(lm: LMLike, role: str) -> Any:
    """What to ship to a worker for ``lm``: an :class:`LMRecipe` for an :class:`LM` (the
    embedded model included, reached at its loopback address), else ``lm`` itself if it
    pickles; :class:`ConfigError` otherwise."""
    from policyopt.lm.local import LocalLM

    if type(lm) in (LM, LocalLM):
        assert isinstance(lm, LM)
        kwargs = dict(lm.kwargs)
        if isinstance(lm, LocalLM):
            kwargs.update(api_base=lm.api_base, api_key="sk-local")
        cache = getattr(getattr(lm, "_cache", None), "directory", None)
        return LMRecipe(
            lm.model,
            kwargs,
            lm.num_retries,
            lm.timeout,
            lm.max_concurrency,
            None if cache is None else str(cache),
            free=isinstance(lm, LocalLM),
        )
    import cloudpickle

    try:
        cloudpickle.dumps(lm)
    except Exception as exc:
        raise ConfigError(
            f"The {role} LM ({type(lm).__name__}) cannot be sent to Dask workers: "
            f"{type(exc).__name__}: {exc}. Name the model (--task-model/--reflection-model), "
            "or pass an LM that pickles."
        ) from exc
    return lm


def _built(lm: Any) -> LMLike:
    return lm.build() if isinstance(lm, LMRecipe) else lm


def remote_cell(
    key: CellKey,
    task: Task,
    optimizer: Any,
    settings: Any,
    task_lm: Any,
    reflection_lm: Any,
    baseline: SplitScore,
    out: str,
) -> CellRecord:
    """Run on a worker: one cell's search and test scoring, exactly as in the driver."""
    return run_cell(
        key, task, optimizer, settings, _built(task_lm), _built(reflection_lm), baseline, Path(out)
    )


class CellsOnDask:
    """A drop-in for :func:`policyopt.bench.cellrun.run_cell` that runs the cell on a Dask cluster.

    ``client`` is a ``distributed.Client`` (or ``"dask://ADDRESS"``). The first call checks,
    on every worker, that the task, the optimizer and the models load there (fails in seconds
    with what is missing); a cell whose every try killed its worker becomes a ``failed`` record.
    """

    def __init__(self, client: Any, task_lm: LMLike, reflection_lm: LMLike) -> None:
        self.runner = DaskRunner(client, remote_cell, n_jobs=-1)
        self.task_lm = portable(task_lm, "task")
        self.reflection_lm = portable(reflection_lm, "reflection")

    def __call__(
        self,
        key: CellKey,
        task: Task,
        optimizer: Any,
        settings: Any,
        shared_task: LMLike,
        shared_reflection: LMLike,
        baseline: SplitScore,
        out: Path,
        listeners: tuple[Callable[[Any], None], ...] = (),
    ) -> CellRecord:
        """Submit the cell and wait for its record (``listeners`` stay here: they are not
        shipped; the driver logs the finished record)."""
        started = time.perf_counter()
        self.runner.preflight(
            (task, optimizer, self.task_lm, self.reflection_lm),
            label=f"task {task.name!r}, optimizer {key.optimizer!r} and the models",
        )
        future = self.runner.client.submit(
            remote_cell,
            key,
            task,
            optimizer,
            settings,
            self.task_lm,
            self.reflection_lm,
            baseline,
            str(out),
            key=f"policyopt-cell-{key.slug}-{time.time_ns()}",
            pure=False,
        )
        try:
            return future.result()
        except Exception as exc:  # the cell itself never raises: Dask lost or killed it
            return CellRecord(
                status="failed",
                error=f"Dask {type(exc).__name__}: {exc}",
                task_usage=LMUsage(),
                optimizer_usage=LMUsage(),
                wall_s=time.perf_counter() - started,
                key=key,
                seed_prompt=task.seed_prompt,
                baseline_test=baseline,
                versions=versions(key.base_optimizer),
            )

    def close(self) -> None:
        """Let the cluster go (a client opened from an address is closed)."""
        self.runner.close()


class DaskSession:
    """The cluster of ``policyopt bench --dask`` (a ``LocalCluster`` of ``n_workers`` worker
    processes on loopback, started and stopped here) or ``--scheduler ADDRESS`` (an existing
    cluster); :meth:`open` gives its client, or ``None`` when neither was asked for."""

    def __init__(self, *, local: bool, address: str | None, n_workers: int) -> None:
        self.local = local
        self.address = address
        self.n_workers = n_workers
        self._cluster: Any = None
        self._client: Any = None

    def open(self) -> Any:
        """Start or reach the cluster; ``None`` without ``--dask``/``--scheduler``."""
        if self.local and self.address:
            raise ConfigError("Give --dask (a local cluster) or --scheduler ADDRESS, not both.")
        if self.address:
            self._client, _ = connect(DASK_PREFIX + self.address)
        elif self.local:
            from distributed import Client

            self._cluster = local_cluster(n_workers=self.n_workers, threads_per_worker=1)
            self._client = Client(self._cluster, set_as_default=False)
        return self._client

    def close(self) -> None:
        """Close the client, and the local cluster if this session started it."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None
