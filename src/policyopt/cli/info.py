"""``policyopt version``, ``optimizers`` and ``tasks``: what is installed."""

from __future__ import annotations

from typing import Annotated

import typer

from policyopt._version import __version__
from policyopt.cli._app import app


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the library version and exit.",
        ),
    ] = False,
) -> None:
    """policyopt: optimize the prompts of LLM programs (GEPA, MIPRO, and registered ones)."""


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
