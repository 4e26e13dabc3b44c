"""The ``policyopt`` command line: ``demo``, ``optimize`` and ``estimate`` (your own program from
a config file), ``show``, ``plot``, ``compare``, ``bench``, ``tasks``, ``version`` (and more).

A mistake on the command line (an unknown task, a budget of 0, a bad setting, a directory that is
not a run) is one line on stderr saying what, where and how to fix it, and exit code 2, checked
before any model is loaded; never a traceback.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from policyopt._version import __version__

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    # help text is plain text: brackets such as gepa[merge=false] are shown, not read as markup
    rich_markup_mode=None,
    help="policyopt: optimize the prompts of LLM programs (GEPA, MIPRO, and registered ones).",
)


def _fail(message: str) -> NoReturn:
    """One clear line on stderr and exit code 2 (a usage error), no traceback."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(2)


@app.command()
def version() -> None:
    """Print the library version."""
    typer.echo(__version__)


@app.command()
def optimizers() -> None:
    """List the registered optimizers: name, the role of their LM, and what they do."""
    from policyopt.registry import get_spec, optimizer_names

    for name in optimizer_names():
        spec = get_spec(name)
        typer.echo(f"{name}: {spec.description} ({spec.lm_role} LM: {spec.lm_param}=)")


@app.command()
def tasks() -> None:
    """List the built-in tasks."""
    from policyopt.tasks import TASKS, get_task

    for name in TASKS:
        task = get_task(name)
        typer.echo(
            f"{name}: {task.description} "
            f"(train {len(task.train)}, val {len(task.val)}, test {len(task.test)})"
        )


def _error_text(exc: BaseException) -> str:
    """An exception as one line; pydantic's many-line errors become their first problem."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError) and exc.errors():
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "settings"
        return f"{where}: {first.get('msg')} (got {first.get('input')!r:.60})"
    return " ".join(str(exc).split()) or type(exc).__name__


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


_MLFLOW_OPTION = typer.Option(
    "--mlflow",
    metavar="URI",
    help="Log the run to MLflow: sqlite:///mlflow.db (or a path ending in .db), a folder, or a "
    "tracking server's URL (pip install 'policyopt[mlflow]').",
)


def _mlflow_uri(uri: str | None) -> str | None:
    """The checked tracking URI of ``--mlflow`` (None when not given), or one error line."""
    if uri is None:
        return None
    from policyopt.errors import PolicyOptError
    from policyopt.tracking.mlflow import resolve_uri

    try:
        return resolve_uri(uri)
    except PolicyOptError as exc:
        _fail(f"--mlflow: {_error_text(exc)}")


def _tracking(uri: str | None, **run: Any) -> Any:
    """An MLflow run as a context manager yielding its listener, or ``None`` without a URI."""
    import contextlib

    if uri is None:
        return contextlib.nullcontext(None)
    from policyopt.tracking.mlflow import mlflow_listener

    return mlflow_listener(uri, **run)


@app.command()
def demo(
    task: Annotated[str, typer.Option(help="Built-in task (see `policyopt tasks`).")] = "",
    algorithm: Annotated[
        str, typer.Option(help="A registered optimizer (see `policyopt optimizers`).")
    ] = "gepa",
    budget: Annotated[int, typer.Option(help="The optimizer's rollout budget.")] = 300,
    n_jobs: Annotated[int, typer.Option(help="Rollouts in parallel.")] = 4,
    limit: Annotated[int, typer.Option(help="Use only the first N examples of each split.")] = 0,
    seed: Annotated[int, typer.Option(help="Random seed of the run.")] = 0,
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

    SmolLM2-135M (llama.cpp, in-process, on 127.0.0.1) is both the task model and the
    reflection/proposal model. Prints the seed, optimized and hand-written reference prompts'
    accuracy on the held-out test split, and what the search spent.
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
        "local model SmolLM2-135M-Instruct as task and proposal LM"
    )
    started = time.perf_counter()
    with (
        LocalLM(n_parallel=max(1, n_jobs), cache=cache or False) as lm,
        LocalLM.for_reflection(cache=cache or False, **spec.small_model_lm) as reflection_lm,
        _tracking(
            tracking_uri,
            run_name=f"demo {task_def.name} {algorithm}",
            params={"task": task_def.name, "budget": budget, "seed": seed, "model": "local"},
        ) as tracker,
    ):
        program = task_def.program(lm)
        listeners = [tracker] if tracker is not None else []
        optimizer = spec.build(
            lm=reflection_lm, max_rollouts=budget, listeners=listeners, **settings
        )
        try:
            result = optimizer.optimize(program, train, val)
        except PolicyOptError as exc:  # e.g. a --run-dir written with other settings
            _fail(_error_text(exc))
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


def _load_run(path: Path) -> Any:
    """The run in ``path``, or one clear error line (exit code 2)."""
    from policyopt.errors import PolicyOptError
    from policyopt.runview import load_run

    try:
        return load_run(path)
    except PolicyOptError as exc:
        _fail(_error_text(exc))
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"cannot read the run in {path}: {exc}")


@app.command()
def show(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (the run_dir= of a run).")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print everything as one JSON object, for machines.")
    ] = False,
    all_proposals: Annotated[
        bool, typer.Option(help="List every proposal (by default: the accepted ones and 20).")
    ] = False,
) -> None:
    """A run's summary, its candidates with lineage, and the proposals kept or rejected and why.

    The summary: best prompt and score, stop reason, rollouts (and failures), LM calls, cost and
    wall time. Works on finished runs and on killed or running ones (from their state).
    """
    from policyopt.runview.show import render, to_dict

    view = _load_run(run_dir)
    if as_json:
        typer.echo(json.dumps(to_dict(view), indent=2, ensure_ascii=False))
        return
    from rich.console import Console

    render(view, Console(), all_proposals=all_proposals)


def _plot_or_fail(draw: Any) -> dict[str, Path]:
    from policyopt.errors import PolicyOptError

    try:
        return dict(draw())
    except PolicyOptError as exc:
        _fail(_error_text(exc))
    except OSError as exc:
        _fail(f"cannot write the plots: {exc}")


@app.command()
def plot(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (the run_dir= of a run).")],
    out: Annotated[
        Path | None, typer.Option(help="Where the files go (default: RUN_DIR/plots).")
    ] = None,
) -> None:
    """Draw a run: best score against rollouts, the candidate lineage (with scores) and Pareto
    coverage per validation example, as PNG files and one self-contained HTML page."""
    from policyopt.runview.plots import plot_run

    view = _load_run(run_dir)
    paths = _plot_or_fail(lambda: plot_run(view, out or run_dir / "plots"))
    for path in paths.values():
        typer.echo(str(path))


@app.command()
def compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="Two or more run directories.")],
    out: Annotated[Path, typer.Option(help="Where the files go.")] = Path("policyopt-compare"),
) -> None:
    """Overlay several runs' best score against rollouts (PNG), with a table of each (HTML)."""
    from policyopt.runview.plots import compare_runs

    views = [_load_run(path) for path in run_dirs]
    paths = _plot_or_fail(lambda: compare_runs(views, out))
    for view in views:
        best = view.best
        score = "-" if best is None else f"{best.val_score:.3f}"
        typer.echo(
            f"{view.path}: {view.optimizer}, best {score}, {view.n_rollouts} rollouts, "
            f"stop {view.stop_reason}"
        )
    for path in paths.values():
        typer.echo(str(path))


def _one_line(text: str) -> str:
    """A many-line config error ("Invalid run config:" and one problem a line) as one line."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        return f"{lines[0]} {'; '.join(lines[1:])}"
    return " ".join(lines)


def _prepare_config(config: Path, sets: list[str] | None, run_dir: Path | None) -> Any:
    """Read, validate and prepare a run config (modules imported, data read, no model loaded),
    or fail with one line naming the file and the key."""
    from policyopt.errors import PolicyOptError
    from policyopt.runconfig.local import load_local_config, prepare
    from policyopt.runconfig.schema import parse_override

    try:
        overrides = [parse_override(text) for text in sets or []]
        loaded = load_local_config(config, overrides=overrides)
        return prepare(loaded, config, run_dir=run_dir)
    except PolicyOptError as exc:
        _fail(f"{config}: {_one_line(str(exc))}")


_SET_HELP = "Override one key, e.g. --set gepa.minibatch_size=5 (repeatable; value read as TOML)."


@app.command()
def optimize(
    config: Annotated[Path, typer.Argument(help="A run config TOML ([policy_optimization]).")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help=_SET_HELP)
    ] = None,
    run_dir: Annotated[
        Path | None,
        typer.Option(help="Run directory (default: the config's run_dir); again to resume."),
    ] = None,
    mlflow: Annotated[
        str | None, typer.Option(metavar="URI", help="Log the run to this MLflow tracking URI.")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress on stderr.")] = True,
) -> None:
    """Optimize your own program's prompt from a config file (see README: "Your own program").

    Checks the config, your modules and data files before any model loads, prints the up-front
    estimate, shows progress, writes result.json and optimize.json into the run directory and
    prints the best prompt in full. Run it again on the same run directory to resume: finished
    rollouts are not paid again.
    """
    from policyopt.errors import PolicyOptError
    from policyopt.runconfig.estimate import estimate_run, format_estimate
    from policyopt.runconfig.run import check_run, run_local, tracking_module

    prepared = _prepare_config(config, set_, run_dir)
    try:
        check_run(prepared, progress=progress, mlflow_uri=mlflow)
        lines = format_estimate(estimate_run(prepared))
    except PolicyOptError as exc:
        _fail(f"{config}: {_one_line(str(exc))}")
    for line in lines:
        typer.echo(line)
    tracking = prepared.config.tracking.mlflow if prepared.config.tracking else None
    uri = mlflow or (tracking.uri if tracking else None)
    log = lambda message: typer.echo(message, err=True)  # noqa: E731
    try:
        if uri is None:
            result, outcome = run_local(prepared, progress=progress, log=log)
        else:
            module = tracking_module()
            params = {"config": str(config), "models.task": prepared.config.models.task}
            with module.mlflow_listener(
                uri,
                experiment=tracking.experiment if tracking else None,
                run_name=tracking.run_name if tracking else None,
                params=params,
            ) as tracked:
                result, outcome = run_local(
                    prepared, progress=progress, listeners=[tracked], log=log
                )
                tracked.log_run_dir(prepared.run_dir)
    except PolicyOptError as exc:
        _fail(f"{config}: {_one_line(str(exc))}")
    best = result.best_prompt
    text = best if isinstance(best, str) else json.dumps(best, indent=2, ensure_ascii=False)
    seed = outcome["seed_val_score"]
    typer.echo(
        f"Best prompt (val score {result.best_score:.3f}"
        + (f", seed prompt {seed:.3f}" if seed is not None else "")
        + f"; {result.n_rollouts} rollouts, stop: {result.stop_reason}):"
    )
    typer.echo(text)
    if outcome["test"]:
        t = outcome["test"]
        typer.echo(
            f"Test split ({t['n_examples']} examples): seed {t['seed_score']:.3f} -> "
            f"best {t['best_score']:.3f}"
        )
    where = prepared.run_dir
    typer.echo(f"Run dir: {where} (`policyopt show {where}`, `policyopt plot {where}`)")


@app.command()
def estimate(
    config: Annotated[Path, typer.Argument(help="A run config TOML ([policy_optimization]).")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help=_SET_HELP)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the estimate as JSON.")] = False,
) -> None:
    """What `policyopt optimize CONFIG` will spend, before anything runs: rollouts, LM calls
    (task and optimizer model), tokens and dollars (litellm's prices; the local model is $0)."""
    from policyopt.errors import PolicyOptError
    from policyopt.runconfig.estimate import estimate_run, format_estimate
    from policyopt.runconfig.run import check_run

    prepared = _prepare_config(config, set_, None)
    try:
        check_run(prepared, progress=False)
        est = estimate_run(prepared)
    except PolicyOptError as exc:
        _fail(f"{config}: {_one_line(str(exc))}")
    if as_json:
        typer.echo(json.dumps(est, indent=2, default=str))
        return
    for line in format_estimate(est):
        typer.echo(line)


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@app.command()
def bench(
    tasks: Annotated[
        str, typer.Option(help="Comma-separated tasks: built-in names or langprobe:<name>.")
    ] = "",
    optimizers: Annotated[
        str, typer.Option(help="Comma-separated optimizers (default: all registered).")
    ] = "",
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0,1,2",
    budget: Annotated[int, typer.Option(help="Rollouts per cell's search.")] = 200,
    limit: Annotated[int, typer.Option(help="Use only the first N examples per split.")] = 0,
    split_seed: Annotated[int, typer.Option(help="Seed of every task's data splits.")] = 0,
    out: Annotated[Path, typer.Option(help="Results directory (reruns resume it).")] = Path(
        "bench-results"
    ),
    n_jobs: Annotated[int, typer.Option(help="Rollouts in parallel inside a cell.")] = 4,
    parallel_cells: Annotated[int, typer.Option(help="Cells run at once.")] = 1,
    task_model: Annotated[str, typer.Option(help="'local' or a litellm model name.")] = "local",
    reflection_model: Annotated[
        str, typer.Option(help="'local' or a litellm model name.")
    ] = "local",
    report_only: Annotated[
        bool, typer.Option(help="Only rebuild the report from the records in --out.")
    ] = False,
    plots: Annotated[bool, typer.Option(help="Draw the plots (needs matplotlib).")] = True,
    sweep: Annotated[
        list[str] | None,
        typer.Option(
            metavar="SPEC",
            help="Variants to add, as a grid: 'gepa:merge=true,false;minibatch_size=3,6' "
            "(repeatable).",
        ),
    ] = None,
    sweep_file: Annotated[
        Path | None,
        typer.Option(help="A TOML grid of variants: sweep tables with optimizer and grid."),
    ] = None,
    baseline: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME",
            help="What the ablation report compares with (repeatable; default: each variant's "
            "plain optimizer).",
        ),
    ] = None,
    dask: Annotated[
        bool,
        typer.Option(
            "--dask",
            help="Run each cell as a Dask task on a local cluster of --parallel-cells worker "
            "processes (pip install 'policyopt[dask]').",
        ),
    ] = False,
    scheduler: Annotated[
        str | None,
        typer.Option(
            metavar="ADDRESS",
            help="Run each cell as a task on the Dask cluster of this scheduler, e.g. "
            "tcp://10.0.0.5:8786 (same policyopt on the workers; --parallel-cells at once).",
        ),
    ] = None,
    mlflow: Annotated[str | None, _MLFLOW_OPTION] = None,
) -> None:
    """Run tasks x optimizers x seeds (resumably) and write tables, CSV/JSON and plots.

    Every cell records the seed and optimized prompts' held-out test scores, rollouts, LM calls
    and tokens (task and optimizer model apart), cost and wall time under --out/cells/; a cell
    with a record is never run again. The report goes to --out/report.md.

    Optimizers may be variants, e.g. --optimizers 'gepa,gepa[merge=false]', or come from
    --sweep/--sweep-file (then, without --optimizers, each swept optimizer's plain form runs
    too as the baseline); the report's Ablations section compares them on paired cells.

    With --dask or --scheduler ADDRESS each cell's search and test run as a Dask task; records,
    resumption and the report stay the same (they are written here).

    With --mlflow URI the invocation is one MLflow run and each cell run now a nested run in it.
    """
    from policyopt.bench import BenchSettings, load_records, run_benchmark, write_report
    from policyopt.bench.registry import names as optimizer_names
    from policyopt.bench.variants import canonical, expand_sweep, load_sweep_file, split_names
    from policyopt.errors import PolicyOptError
    from policyopt.tasks import TASKS

    if not report_only:
        try:
            swept = [v for spec in sweep or [] for v in expand_sweep(spec)]
            if sweep_file is not None:
                swept += load_sweep_file(sweep_file)
            names = split_names(optimizers)
            if not names:
                names = [v.optimizer for v in swept] or optimizer_names()
            names = list(dict.fromkeys([*names, *(v.name for v in swept)]))
            settings = BenchSettings(
                tasks=_names(tasks) or list(TASKS),
                optimizers=names,
                seeds=[int(s) for s in _names(seeds)],
                budget=budget,
                limit=limit or None,
                split_seed=split_seed,
                n_jobs=n_jobs,
                parallel_cells=parallel_cells,
                task_model=task_model,
                reflection_model=reflection_model,
            )
            unknown = [
                b for b in (canonical(b) for b in baseline or []) if b not in settings.optimizers
            ]
            if unknown:
                raise ValueError(
                    f"--baseline {', '.join(unknown)} is not among the optimizers run: "
                    f"{', '.join(settings.optimizers)}."
                )
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
        tracking_uri = _mlflow_uri(mlflow)
        from policyopt.bench.dask_cells import DaskSession

        cluster = DaskSession(local=dask, address=scheduler, n_workers=parallel_cells)
        try:
            run_benchmark(
                settings,
                out,
                dask=cluster.open(),
                log=lambda m: typer.echo(m, err=True),
                mlflow=tracking_uri,
            )
        except PolicyOptError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        finally:
            cluster.close()
    import shlex
    import sys

    from policyopt.bench.report import machine_summary

    records = load_records(out)
    command = shlex.join(["policyopt", *sys.argv[1:]])
    header = f"Command: `{command}`\n\nMachine: {machine_summary()}" if not report_only else ""
    if report_only and (out / "report.md").exists():  # keep the header of the run itself
        first = (out / "report.md").read_text(encoding="utf-8").split("\n## ", 1)[0]
        header = "\n\n".join(
            line for line in first.splitlines()[1:] if line.startswith(("Command", "Machine"))
        )
    try:
        paths = write_report(records, out, plots=plots, header=header, baselines=baseline)
    except PolicyOptError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(paths["markdown"].read_text(encoding="utf-8"))
    typer.echo("wrote " + ", ".join(str(p) for p in paths.values()), err=True)


@app.command("task-app")
def task_app_command(
    target: Annotated[
        str,
        typer.Argument(
            help="module:object - a FastAPI app, a policyopt Task, or a callable returning "
            "one; e.g. policyopt.remote.builtin:antonyms"
        ),
    ],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: a free one).")] = 8001,
    api_key: Annotated[
        str | None, typer.Option(help="Require this key (Bearer or X-API-Key).")
    ] = None,
    api_key_env: Annotated[
        str | None, typer.Option(help="Read the key from this environment variable.")
    ] = None,
) -> None:
    """Serve a task app: GET /health, GET /task_info and POST /rollout for remote jobs."""
    import os

    from policyopt.errors import ConfigError
    from policyopt.remote._serving import serve_forever
    from policyopt.remote.task_app import load_app

    if api_key is not None and api_key_env is not None:
        raise typer.BadParameter("give --api-key or --api-key-env, not both")
    key = api_key
    if api_key_env is not None:
        key = os.environ.get(api_key_env) or None
        if key is None:
            raise typer.BadParameter(f"--api-key-env: {api_key_env} is not set or empty")
    try:
        served = load_app(target, api_key=key)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if key is None:
        typer.echo(
            "warning: no API key (--api-key/--api-key-env): anyone who can reach this port "
            "can run rollouts.",
            err=True,
        )

    def ready(url: str) -> None:
        typer.echo(f"task app {target} listening on {url} (health: {url}/health)")

    serve_forever(served, host=host, port=port, on_ready=ready)


# the job server and its client (heavy imports happen inside the commands)
from policyopt.remote.cli import job_app, serve  # noqa: E402

app.command("serve")(serve)
app.add_typer(job_app, name="job")


def main() -> None:
    """Entry point of the ``policyopt`` script."""
    app()


if __name__ == "__main__":
    main()
