"""The harness in MLflow (``policyopt bench --mlflow URI``): one parent run per invocation, one
nested run per cell.

A cell's run holds its key as params (task, optimizer, seed, budget, fingerprint, models), its
scores as metrics (``seed_test_score``, ``optimized_test_score``, ``gain``, ``best_val_score``,
``rollouts``, ``cost_usd``, LM calls and tokens, times, and ``best_score`` against rollouts from
the cell's curve), its best prompt as ``best_prompt.txt``, and ends FAILED when the cell did.
policyopt's own optimizers also stream their events into it (per-candidate scores).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from policyopt.bench.records import BenchSettings, CellKey, CellRecord

__all__ = ["bench_run", "cell_run", "log_cell"]


@contextlib.contextmanager
def bench_run(uri: str | None, settings: BenchSettings, out: Path) -> Iterator[Any]:
    """The invocation's parent run (``None`` without a URI); its params are the grid."""
    if uri is None:
        yield None
        return
    from policyopt.tracking.mlflow import mlflow_listener

    params = {
        "tasks": ",".join(settings.tasks),
        "optimizers": ",".join(settings.optimizers),
        "seeds": ",".join(str(s) for s in settings.seeds),
        "budget": settings.budget,
        "limit": settings.limit,
        "split_seed": settings.split_seed,
        "task_model": settings.task_model,
        "reflection_model": settings.reflection_model,
        "n_jobs": settings.n_jobs,
        "parallel_cells": settings.parallel_cells,
        "out": str(out),
    }
    with mlflow_listener(
        uri, experiment="policyopt-bench", run_name=f"bench {out.name}", params=params
    ) as run:
        yield run


@contextlib.contextmanager
def cell_run(parent: Any, key: CellKey, settings: BenchSettings) -> Iterator[Any]:
    """A cell's run nested under ``parent`` (``None`` when there is no parent)."""
    if parent is None:
        yield None
        return
    from policyopt.tracking.mlflow import mlflow_listener

    params = {
        "task": key.task,
        "optimizer": key.optimizer,
        "seed": key.seed,
        "budget": key.budget,
        "fingerprint": key.fingerprint,
        "task_model": settings.task_model,
        "reflection_model": settings.reflection_model,
    }
    name = f"{key.task} {key.optimizer} seed {key.seed}"
    with mlflow_listener(parent.uri, parent=parent, run_name=name, params=params) as run:
        yield run


def log_cell(run: Any, record: CellRecord) -> None:
    """A finished cell's scores, spend and best prompt; a failed cell's run ends FAILED."""
    metrics: dict[str, float] = {
        "rollouts": record.rollouts,
        "search_wall_s": record.search_wall_s,
        "wall_s": record.wall_s,
        "task_lm_calls": record.task_usage.calls,
        "optimizer_lm_calls": record.optimizer_usage.calls,
        "tokens": record.tokens,
    }
    if record.baseline_test is not None:
        metrics["seed_test_score"] = record.baseline_test.score
    if record.optimized_test is not None:
        metrics["optimized_test_score"] = record.optimized_test.score
    if record.gain is not None:
        metrics["gain"] = record.gain
    if record.best_val_score is not None:
        metrics["best_val_score"] = record.best_val_score
    if record.cost_usd is not None:
        metrics["cost_usd"] = record.cost_usd
    run.log_metrics(metrics, step=record.rollouts)
    if not run.finished:  # a peer optimizer: no events, the record's curve instead
        for rollouts, score in record.curve:
            run.log_metrics({"best_score": score}, step=rollouts)
    run.set_tags({"policyopt.cell_status": record.status, "policyopt.cell": record.key.slug})
    if record.best_prompt:
        run.log_text(record.best_prompt, "best_prompt.txt")
    if record.status != "ok":
        run.set_tags({"policyopt.error": record.error or ""})
        run.end_status("FAILED")
