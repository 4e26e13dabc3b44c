"""Run a benchmark grid: every (task, optimizer, seed) cell, resumably, side by side.

An optimizer may be a variant, ``gepa[merge=false]``: its settings reach the optimizer as
``CellContext.settings`` overrides (on top of ``BenchSettings.settings`` for its name).

Layout of the output directory::

    bench.json                 the settings of the last invocation
    baselines/<task>.json      the seed prompt's test score (one per task: all cells share it)
    cells/<cell>.json          one record per finished cell (never run again)
    runs/<cell>/               the cell's optimizer state (policyopt resumes a cut cell from it)

A folder holds one run: a grid whose code or model files differ from its cells'
(:mod:`policyopt.bench.fingerprint`), or that gives a finished cell other settings, is refused
before anything runs; every record carries the run's identity.

All cells share one task model and one reflection model (for the embedded model: two llama.cpp
servers); each cell talks to them through its own :class:`~policyopt.lm.metered.MeteredLM` views,
so calls and tokens are counted per cell, task model and optimizer model apart. The harness scores
the seed and the optimized prompt on the held-out test split with the same task program for every
optimizer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from policyopt.bench import cellrun
from policyopt.bench.cellrun import score_on_test
from policyopt.bench.fingerprint import RunIdentity, run_identity
from policyopt.bench.records import (
    BenchSettings,
    CellKey,
    CellRecord,
    SplitScore,
    safe_name,
    write_atomic,
)
from policyopt.bench.registry import get_optimizer
from policyopt.bench.tracking import bench_run, cell_run, log_cell
from policyopt.bench.variants import check_settings, parse_variant
from policyopt.errors import ConfigError
from policyopt.lm.base import LM, LMLike
from policyopt.lm.local_models import is_local
from policyopt.lm.metered import MeteredLM
from policyopt.tasks.base import Task

__all__ = ["BenchRun", "load_records", "resolve_task", "run_benchmark"]

Log = Callable[[str], None]


def resolve_task(name: str, split_seed: int = 0, limit: int | None = None) -> Task:
    """A task by name: a built-in one, ``langprobe:<dataset>`` (needs the network once), or
    ``code:<name>`` (the candidate is code, scored by unit tests: :mod:`policyopt.tasks.code`)."""
    if name.startswith("langprobe:"):
        from policyopt.tasks import langprobe

        task = langprobe.load_langprobe(name.split(":", 1)[1], seed=split_seed)
    elif name.startswith("code:"):
        from policyopt.tasks.code import load_code_task

        task = load_code_task(name.split(":", 1)[1], seed=split_seed)
    else:
        from policyopt.tasks import get_task

        task = get_task(name, seed=split_seed)
    return _limited(task, limit)


def _can_run(optimizer: Any, task: Task, say: Log) -> bool:
    """Whether ``optimizer`` can search ``task``: a code task's candidate is code, which only
    policyopt's own optimizers (with their artifact settings) search; the peers optimize the
    prompt of a task LM, which a code task does not have."""
    from policyopt.bench.ours import Registered

    if task.kind != "code" or isinstance(optimizer, Registered):
        return True
    say(f"skipping {optimizer.name} on {task.name}: it optimizes prompts of a task LM, not code")
    return False


def _limited(task: Task, limit: int | None) -> Task:
    """``task`` with each split cut to its first ``limit`` examples (unchanged for None)."""
    if limit is None:
        return task
    return dataclasses.replace(
        task, train=task.train[:limit], val=task.val[:limit], test=task.test[:limit]
    )


def load_records(out_dir: str | Path) -> list[CellRecord]:
    """Every cell record in a benchmark output directory, in a stable order."""
    cells = Path(out_dir) / "cells"
    records = [
        CellRecord.model_validate_json(path.read_text(encoding="utf-8"))
        for path in sorted(cells.glob("*.json"))
    ]
    return sorted(records, key=lambda r: (r.key.task, r.key.optimizer, r.key.seed, r.key.budget))


@dataclasses.dataclass
class BenchRun:
    """What one :func:`run_benchmark` call did: all records, and which cells it ran now."""

    out_dir: Path
    records: list[CellRecord]
    ran: list[CellKey]
    skipped: list[CellKey]
    unavailable: dict[str, str]


def _optimizers(settings: BenchSettings, say: Log) -> tuple[dict[str, Any], dict[str, str]]:
    """The grid's optimizers that can run here by variant name, and why the others cannot."""
    unavailable: dict[str, str] = {}
    optimizers = {}
    variants = [parse_variant(name) for name in settings.optimizers]
    check_settings(variants)  # unknown setting names fail before any model starts
    for variant in variants:
        name = variant.name
        optimizer = get_optimizer(variant.optimizer)
        reason = optimizer.unavailable()
        if reason is not None:
            unavailable[name] = reason
            say(f"skipping optimizer {name}: {reason}")
        else:
            optimizers[name] = optimizer
    return optimizers, unavailable


def run_benchmark(
    settings: BenchSettings,
    out_dir: str | Path,
    *,
    task_lm: LMLike | None = None,
    reflection_lm: LMLike | None = None,
    tasks: Mapping[str, Task] | None = None,
    log: Log | None = None,
    dask: Any = None,
    mlflow: str | None = None,
) -> BenchRun:
    """Run every cell of ``settings``' grid that has no record yet in ``out_dir``.

    ``dask`` (a ``distributed.Client`` or ``"dask://ADDRESS"``, or a callable giving one, called
    only when a cell is left to run) runs each cell's search and test as a Dask task
    (:mod:`policyopt.bench.dask_cells`); records and resumption stay the same. With no cell left
    to run, nothing starts: no model, no cluster, no MLflow run.

    ``task_lm``/``reflection_lm`` replace the models named in ``settings`` (e.g. scripted ones in
    tests); ``tasks`` supplies task objects by name instead of looking them up. ``mlflow`` (a
    tracking URI) logs the invocation as an MLflow run with one nested run per cell run now.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = log or (lambda message: None)

    optimizers, unavailable = _optimizers(settings, say)
    task_objects: dict[str, Task] = {}
    for name in settings.tasks:
        if tasks is not None and name in tasks:
            task_objects[name] = _limited(tasks[name], settings.limit)
        else:
            task_objects[name] = resolve_task(name, settings.split_seed, settings.limit)

    identity = run_identity(
        settings.task_model if task_lm is None else f"given:{type(task_lm).__name__}",
        settings.reflection_model
        if reflection_lm is None
        else f"given:{type(reflection_lm).__name__}",
    )
    small = is_local(settings.task_model) or is_local(settings.reflection_model)
    runnable = {
        (task_name, name)
        for task_name in settings.tasks
        for name in optimizers
        if _can_run(optimizers[name], task_objects[task_name], say)
    }
    keys = [
        CellKey.of(
            settings, task_name, name, seed, run=identity, preset=_preset(optimizers[name], small)
        )
        # the optimizers of one (task, seed) run back to back: a machine whose load drifts
        # during the grid then treats them alike
        for task_name in settings.tasks
        for seed in settings.seeds
        for name in optimizers
        if (task_name, name) in runnable
    ]
    _refuse_mixing(out, keys, identity)
    write_atomic(out / "bench.json", settings.model_dump_json(indent=2))  # refused: untouched
    todo: list[CellKey] = []
    skipped: list[CellKey] = []
    for key in keys:
        (skipped if _finished(out, key) else todo).append(key)
    say(f"{len(todo)} cells to run, {len(skipped)} already finished")
    if not todo:  # a finished grid's rerun: no model started, no cluster reached
        return BenchRun(out, load_records(out), todo, skipped, unavailable)
    if callable(dask):  # a cluster opened on demand (the CLI's --dask)
        dask = dask()

    with (
        _models(settings, task_lm, reflection_lm) as (shared_task, shared_reflection),
        bench_run(mlflow, settings, out) as parent_run,
    ):
        baselines = _Baselines(out, settings, shared_task, say, identity.digest)
        run_cell: Callable[..., CellRecord] = cellrun.run_cell
        remote = None
        if dask is not None:  # the cell's search and test on a worker; all else stays here
            from policyopt.bench.dask_cells import CellsOnDask

            remote = CellsOnDask(dask, shared_task, shared_reflection)
            run_cell = remote
        lock = threading.Lock()
        done = 0

        def one(key: CellKey) -> None:
            nonlocal done
            task = task_objects[key.task]
            baseline = baselines.get(key.task, task)
            with cell_run(parent_run, key, settings) as tracker:
                record = run_cell(
                    key,
                    task,
                    optimizers[key.optimizer],
                    settings,
                    shared_task,
                    shared_reflection,
                    baseline,
                    out,
                    listeners=() if tracker is None else (tracker,),
                )
                record = record.model_copy(update={"identity": identity})
                if tracker is not None:
                    log_cell(tracker, record)
            write_atomic(out / "cells" / f"{key.slug}.json", record.model_dump_json(indent=2))
            with lock:
                done += 1
                said = (
                    f"test {record.baseline_test.score:.3f} -> {record.optimized_test.score:.3f}"
                    if record.status == "ok" and record.baseline_test and record.optimized_test
                    else f"FAILED: {record.error}"
                )
                say(
                    f"[{done}/{len(todo)}] {key.task} {key.optimizer} seed {key.seed}: {said} "
                    f"({record.rollouts} rollouts, {record.wall_s:.0f}s)"
                )

        if settings.parallel_cells == 1:
            for key in todo:
                one(key)
        else:
            with ThreadPoolExecutor(settings.parallel_cells) as pool:
                list(pool.map(one, todo))
        if remote is not None:
            remote.close()

    return BenchRun(out, load_records(out), todo, skipped, unavailable)


def _preset(optimizer: Any, small_model: bool) -> dict[str, Any]:
    """The settings a registered optimizer applies on top of a cell's (its small-model preset
    and reflection LM overrides), for the fingerprint; empty for peers (their adapters are in
    the package's source hash, their packages in ``versions``)."""
    spec = getattr(optimizer, "spec", None)
    if spec is None or not small_model:
        return {}
    return json.loads(
        json.dumps({"settings": spec.small_model_settings, "lm": spec.small_model_lm}, default=repr)
    )


def _refuse_mixing(out: Path, keys: list[CellKey], identity: RunIdentity) -> None:
    """Refuse to add cells to a folder holding another run's cells (other code or model
    files), or the same cell under another fingerprint (settings or presets changed)."""
    if not (out / "cells").is_dir():
        return
    planned = {(k.task, k.optimizer, k.seed, k.budget): k.fingerprint for k in keys}
    for record in load_records(out):
        key = record.key
        if key.run != identity.digest:
            then = record.identity.code if record.identity else "unrecorded code"
            raise ConfigError(
                f"{out / 'cells'} holds cells of another run ({key.slug}: {then}, run "
                f"{key.run or 'without a code and model fingerprint'}); this run is "
                f"{identity.code} with task model {identity.task_model}. Scores of different "
                "code or model files must not mix: use another --out folder."
            )
        fingerprint = planned.get((key.task, key.optimizer, key.seed, key.budget))
        if fingerprint is not None and fingerprint != key.fingerprint:
            raise ConfigError(
                f"{out / 'cells'} holds {key.task} / {key.optimizer} / seed {key.seed} under "
                f"fingerprint {key.fingerprint}; this run's settings give {fingerprint}. "
                "Write runs with other settings to another --out folder."
            )


def _finished(out: Path, key: CellKey) -> bool:
    """True when the cell has an ``ok`` record (failed cells run again)."""
    path = out / "cells" / f"{key.slug}.json"
    if not path.exists():
        return False
    try:
        return CellRecord.model_validate_json(path.read_text(encoding="utf-8")).status == "ok"
    except ValueError:
        return False


@contextlib.contextmanager
def _models(
    settings: BenchSettings, task_lm: LMLike | None, reflection_lm: LMLike | None
) -> Iterator[tuple[LMLike, LMLike]]:
    """The shared task and reflection models, started once for the whole grid."""
    with contextlib.ExitStack() as stack:
        slots = settings.n_jobs * settings.parallel_cells
        if task_lm is None:
            task_lm = stack.enter_context(_open(settings.task_model, slots, reflection=False))
        if reflection_lm is None:
            reflection_lm = stack.enter_context(
                _open(settings.reflection_model, max(2, settings.parallel_cells), reflection=True)
            )
        yield task_lm, reflection_lm


@contextlib.contextmanager
def _open(model: str, slots: int, *, reflection: bool) -> Iterator[LM]:
    if is_local(model):
        from policyopt.lm.local import LocalLM

        make = LocalLM.for_reflection if reflection else LocalLM
        with make(model=model, n_parallel=slots) as local:
            yield local
    else:
        yield LM(model, temperature=1.0 if reflection else 0.0)


class _Baselines:
    """The seed prompt's test score, computed once per task and kept on disk."""

    def __init__(self, out: Path, settings: BenchSettings, lm: LMLike, say: Log, run: str) -> None:
        self.out = out
        self.run = run
        self.settings = settings
        self.lm = lm
        self.say = say
        self.lock = threading.Lock()
        self.memo: dict[str, SplitScore] = {}

    def get(self, name: str, task: Task) -> SplitScore:
        with self.lock:
            if name in self.memo:
                return self.memo[name]
            identity = {
                "task": name,
                "seed_prompt": task.seed_prompt,
                "test_ids": [str(e.get("id", i)) for i, e in enumerate(task.test)],
                "task_model": self.settings.task_model,
                "limit": self.settings.limit,
                "split_seed": self.settings.split_seed,
                "run": self.run,
            }
            path = self.out / "baselines" / f"{safe_name(name)}.json"
            if path.exists():
                saved = json.loads(path.read_text(encoding="utf-8"))
                if saved.get("identity") == identity:
                    score = SplitScore.model_validate(saved["score"])
                    self.memo[name] = score
                    return score
            view = MeteredLM(self.lm)
            score = score_on_test(task.program(view).evaluate, task, task.seed_prompt, view)
            payload = {"identity": identity, "score": json.loads(score.model_dump_json())}
            write_atomic(path, json.dumps(payload, indent=2))
            self.say(f"{name}: seed prompt scores {score.score:.3f} on {score.n_examples} test")
            self.memo[name] = score
            return score
