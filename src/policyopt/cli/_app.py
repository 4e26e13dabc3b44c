"""The ``policyopt`` Typer app and what its commands share: one-line errors (exit code 2), the
``--mlflow`` option, reading a run directory."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, NoReturn

import typer


def _argument_type(self: Any, ctx: Any) -> str | None:
    """An argument with a metavar shows it alone: typer would add its Python type, such as
    ``<list[Path]>``, which says nothing to a user."""
    return None if self.metavar else _typer_argument_type(self, ctx)


_typer_argument_type = typer.core.TyperArgument.display_type_rich
typer.core.TyperArgument.display_type_rich = _argument_type  # type: ignore[method-assign]

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


def _error_text(exc: BaseException) -> str:
    """An exception as one line; pydantic's many-line errors become their first problem."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError) and exc.errors():
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "settings"
        return f"{where}: {first.get('msg')} (got {first.get('input')!r:.60})"
    return " ".join(str(exc).split()) or type(exc).__name__


def _one_line(text: str) -> str:
    """A many-line config error ("Invalid run config:" and one problem a line) as one line."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        return f"{lines[0]} {'; '.join(lines[1:])}"
    return " ".join(lines)


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
    if uri is None:
        return contextlib.nullcontext(None)
    from policyopt.tracking.mlflow import mlflow_listener

    return mlflow_listener(uri, **run)


def _load_run(path: Path) -> Any:
    """The run in ``path``, or one clear error line (exit code 2)."""
    from policyopt.errors import PolicyOptError
    from policyopt.runview import load_run

    try:
        view = load_run(path)
    except PolicyOptError as exc:
        _fail(_error_text(exc))
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"cannot read the run in {path}: {exc}")
    if view.damaged_lines:
        source = "result.json" if view.finished else "state.json and the journal's other records"
        typer.echo(
            f"warning: {path}/journal.jsonl has {view.damaged_lines} damaged line(s) in the "
            f"middle, skipped; the run is read from {source}.",
            err=True,
        )
    return view
