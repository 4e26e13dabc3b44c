"""One benchmark cell, start to finish: search with the optimizer, then score on the test split.

Run in the driver by :mod:`policyopt.bench.runner` and on a Dask worker by
:mod:`policyopt.bench.dask_cells`, exactly the same way. Its own module so that the runner can hand
cells to Dask and Dask's worker can run one cell without the two importing each other.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from policyopt._version import __version__
from policyopt.bench.cell import CellContext, OptimizerOutcome
from policyopt.bench.records import BenchSettings, CellKey, CellRecord, SplitScore
from policyopt.lm.base import LMLike
from policyopt.lm.local_models import is_local
from policyopt.lm.metered import MeteredLM
from policyopt.rollout.engine import RolloutEngine
from policyopt.tasks.base import Task

__all__ = ["run_cell", "score_on_test", "versions"]


def score_on_test(
    evaluate: Callable[[Any, Any], object],
    task: Task,
    prompt: str,
    view: MeteredLM,
    n_jobs: int = 4,
) -> SplitScore:
    """``prompt``'s mean score over the task's test split (a failed rollout scores 0)."""
    with RolloutEngine(evaluate, n_jobs=n_jobs, max_errors=None) as engine:
        ids = engine.add_split("test", task.test)
        batch = engine.run([(prompt, i) for i in ids], split="test", label="test")
    rollouts = [r for r in batch.rollouts if r is not None]
    per_example = {str(r.example_id): r.value for r in rollouts}
    return SplitScore(
        score=sum(per_example.values()) / max(1, len(per_example)),
        n_examples=len(per_example),
        n_failed=sum(r.failed for r in rollouts),
        per_example=per_example,
        usage=view.usage,
    )


def run_cell(
    key: CellKey,
    task: Task,
    optimizer: Any,
    settings: BenchSettings,
    shared_task: LMLike,
    shared_reflection: LMLike,
    baseline: SplitScore,
    out: Path,
    listeners: tuple[Callable[[Any], None], ...] = (),
) -> CellRecord:
    """Search, then score the result on test; a crash becomes a ``failed`` record."""
    started = time.perf_counter()
    task_view = MeteredLM(shared_task)
    reflection_view = MeteredLM(shared_reflection)
    ctx = CellContext(
        task=task,
        task_lm=task_view,
        reflection_lm=reflection_view,
        budget=key.budget,
        seed=key.seed,
        n_jobs=settings.n_jobs,
        run_dir=out / "runs" / key.slug,
        small_model=is_local(settings.task_model) or is_local(settings.reflection_model),
        settings=settings.cell_settings(key.optimizer),
        listeners=listeners,
    )
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    common: dict[str, Any] = {
        "key": key,
        "seed_prompt": task.seed_prompt,
        "baseline_test": baseline,
        "versions": versions(key.base_optimizer),
    }
    try:
        outcome: OptimizerOutcome = optimizer.run(ctx)
    except Exception as exc:  # a crashed search is a result too: record it and go on
        (ctx.run_dir / "error.txt").write_text(traceback.format_exc(), encoding="utf-8")
        return CellRecord(
            status="failed",
            error=f"{type(exc).__name__}: {exc}",
            task_usage=task_view.usage,
            optimizer_usage=reflection_view.usage,
            wall_s=time.perf_counter() - started,
            **common,
        )
    search_s = time.perf_counter() - started
    test_view = MeteredLM(shared_task)
    evaluate = (
        (lambda _prompt, example: outcome.evaluate(example))  # type: ignore[misc]
        if outcome.evaluate is not None
        else task.program(test_view).evaluate
    )
    optimized = score_on_test(evaluate, task, outcome.best_prompt, test_view, settings.n_jobs)
    return CellRecord(
        status="ok",
        best_prompt=outcome.best_prompt,
        optimized_test=optimized,
        best_val_score=outcome.best_val_score,
        rollouts=outcome.rollouts,
        curve=[(int(r), float(s)) for r, s in outcome.curve],
        task_usage=task_view.usage,
        optimizer_usage=reflection_view.usage,
        search_wall_s=search_s,
        wall_s=time.perf_counter() - started,
        details=json.loads(json.dumps(outcome.details, default=str)),
        **common,
    )


_PACKAGES = {"gepa-lib": "gepa", "dspy-gepa": "dspy", "dspy-mipro": "dspy"}


def versions(optimizer: str) -> dict[str, str]:
    """policyopt's version, and the peer package's when the optimizer is a peer."""
    versions = {"policyopt": __version__}
    package = _PACKAGES.get(optimizer)
    if package is not None:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return versions
