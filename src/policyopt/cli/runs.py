"""``policyopt show``, ``plot`` and ``compare``: look at run directories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from policyopt.cli._app import _error_text, _fail, _load_run, app


@app.command()
def show(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (the run_dir= of a run).")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print everything as one JSON object, for machines.")
    ] = False,
    all_proposals: Annotated[
        bool, typer.Option(help="List every proposal (by default: the accepted ones and 20).")
    ] = False,
    examples: Annotated[
        bool,
        typer.Option(
            "--examples",
            help="Per validation example: input, output, score and feedback, for the seed and "
            "the best prompt.",
        ),
    ] = False,
) -> None:
    """A run's summary, its candidates with lineage, and the proposals kept or rejected and why.

    The summary: best prompt and score, stop reason, rollouts (and failures), LM calls, cost and
    wall time. Works on finished runs and on killed or running ones (from their state).
    """
    from policyopt.runview.examples import example_rows
    from policyopt.runview.show import render, render_examples, to_dict

    view = _load_run(run_dir)
    rows = example_rows(view) if examples else None
    if as_json:
        data = to_dict(view)
        if rows is not None:
            data["examples"] = rows
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))
        return
    from rich.console import Console

    if rows is not None:
        render_examples(rows, Console())
        return
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
    run_dirs: Annotated[
        list[Path], typer.Argument(metavar="RUN_DIR", help="Two or more run directories.")
    ],
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
