"""``policyopt bench``: tasks x optimizers x seeds, resumable, with a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from policyopt.cli._app import _MLFLOW_OPTION, _mlflow_uri, app


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@app.command()
def bench(
    tasks: Annotated[
        str,
        typer.Option(
            help="Comma-separated tasks: built-in names or langprobe:<name> (default: the "
            "development tasks; held-out ones such as plural only when named)."
        ),
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
    task_model: Annotated[
        str,
        typer.Option(
            help="'local' (SmolLM2-135M), 'local:qwen2.5-coder-0.5b' or a litellm model name."
        ),
    ] = "local",
    reflection_model: Annotated[
        str,
        typer.Option(
            help="'local' (SmolLM2-135M), 'local:qwen2.5-coder-0.5b' or a litellm model name."
        ),
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
    from policyopt.bench.heldout import DEVELOPMENT
    from policyopt.bench.registry import names as optimizer_names
    from policyopt.bench.variants import canonical, expand_sweep, load_sweep_file, split_names
    from policyopt.errors import PolicyOptError
    from policyopt.lm.local_models import is_local, local_model

    if not report_only:
        try:
            swept = [v for spec in sweep or [] for v in expand_sweep(spec)]
            if sweep_file is not None:
                swept += load_sweep_file(sweep_file)
            for model in (task_model, reflection_model):
                if is_local(model):
                    local_model(model)  # an unknown local:NAME fails here, in one line
            names = split_names(optimizers)
            if not names:
                names = [v.optimizer for v in swept] or optimizer_names()
            names = list(dict.fromkeys([*names, *(v.name for v in swept)]))
            settings = BenchSettings(
                tasks=_names(tasks) or list(DEVELOPMENT.tasks),
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
                dask=cluster.open,  # started only when a cell is left to run
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
