"""``policyopt optimize`` and ``estimate``: your own program from a config file."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from policyopt.cli._app import _fail, _one_line, app
from policyopt.cli._signals import NO_RESULT, exit_code_for, stop_signals


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
        text = _one_line(str(exc))
        named = text.startswith(str(config)) or text.startswith(f"Config file {str(config)!r}")
        _fail(text if named else f"{config}: {text}")  # the file's name once, not twice


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
    accept_changed: Annotated[
        str | None,
        typer.Option(
            "--accept-changed",
            metavar="PARTS",
            help="Resume although these parts of the run's identity changed, comma-separated "
            "(e.g. evaluate,task_model): the run dir's cached scores were made by the old ones.",
        ),
    ] = None,
    retry_failures: Annotated[
        bool,
        typer.Option(
            "--retry-failures",
            help="Resume paying the failed rollouts of the run dir's journal again (by default "
            "they replay as recorded, like its successes).",
        ),
    ] = False,
    salvage: Annotated[
        bool,
        typer.Option(
            "--salvage",
            help="Resume a run whose journal.jsonl is damaged in the middle from the records "
            "before the damage (the whole file is kept as journal.jsonl.damaged).",
        ),
    ] = False,
) -> None:
    """Optimize your own program's prompt from a config file (see README: "Your own program").

    Checks the config, your modules and data files before any model loads, prints the up-front
    estimate, shows progress, writes result.json and optimize.json into the run directory and
    prints the best prompt in full. Run it again on the same run directory to resume: finished
    rollouts are not paid again.

    Exit codes: 0 a scored result; 1 no scored result (every rollout of the seed prompt failed);
    2 a bad config or command line; 130 Ctrl-C and 143 SIGTERM (the result so far is written).
    """
    from policyopt.errors import EvaluationError, LMError, PolicyOptError
    from policyopt.runconfig.estimate import estimate_run, format_estimate
    from policyopt.runconfig.run import check_run

    prepared = _prepare_config(config, set_, run_dir)
    if accept_changed:
        prepared.accept_changed = tuple(p.strip() for p in accept_changed.split(",") if p.strip())
    prepared.retry_failures = retry_failures
    try:
        check_run(prepared, progress=progress, mlflow_uri=mlflow, credentials=True)
        lines = format_estimate(estimate_run(prepared))
    except PolicyOptError as exc:
        _fail(f"{config}: {_one_line(str(exc))}")
    _check_journal(prepared.run_dir, config, salvage=salvage)
    for line in lines:
        typer.echo(line)
    with stop_signals() as received, _held_stop_warnings() as held:
        try:
            result, outcome = _run(prepared, config, mlflow, progress=progress)
        except KeyboardInterrupt:
            typer.echo(
                "error: stopped before the seed prompt was scored, so there is no result; the "
                f"finished rollouts are in {prepared.run_dir}: run the same command to resume.",
                err=True,
            )
            raise typer.Exit(exit_code_for(received)) from None
        except (EvaluationError, LMError) as exc:  # the run itself failed: no scored result
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            typer.echo(f"error: {config}: {first[:600]}", err=True)
            raise typer.Exit(NO_RESULT) from None
        except PolicyOptError as exc:
            _fail(f"{config}: {_one_line(str(exc))}")
    if not outcome["seed_scored"]:
        typer.echo(
            f"error: {config}: every rollout of the seed prompt failed, so the run has no score "
            f"(last error: {str(outcome['seed_error'])[:300]}). Fix evaluate() and run again.",
            err=True,
        )
        raise typer.Exit(NO_RESULT)
    for record in held:  # why the run stopped early: said once the run has a score to show
        logging.getLogger(record.name).handle(record)
    _print_outcome(result, outcome, prepared.run_dir)
    if result.stop_reason == "interrupted":
        raise typer.Exit(exit_code_for(received))


@contextlib.contextmanager
def _held_stop_warnings() -> Iterator[list[logging.LogRecord]]:
    """Hold the run's "stopping the run" warnings (records with a ``stop_reason``) instead of
    printing them: when the seed prompt has no score the one ``error:`` line says the same, and
    otherwise the caller prints them itself (the reason also stays in result.json)."""
    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        if hasattr(record, "stop_reason"):
            held.append(record)
            return False
        return True

    logger = logging.getLogger("policyopt")
    logger.addFilter(hold)
    try:
        yield held
    finally:
        logger.removeFilter(hold)


def _check_journal(run_dir: Path, config: Path, *, salvage: bool) -> None:
    """Refuse a run dir whose journal is damaged in the middle, before any model loads, unless
    ``--salvage`` asks to keep the records before the damage; never silently."""
    from policyopt.errors import StateError
    from policyopt.state.journal import JOURNAL_FILE, Journal, JournalCorrupt, read_journal
    from policyopt.state.rundir import lock_run_dir

    try:
        read_journal(run_dir, skip_damaged=False)
        return
    except JournalCorrupt as exc:
        damage = exc
    if not salvage:
        _fail(
            f"{config}: {damage.path} line {damage.line} is damaged (not a JSON object). "
            f"`policyopt optimize {config} --salvage` resumes from the {damage.kept} records "
            "before it (the whole file is kept as journal.jsonl.damaged); or move "
            f"{run_dir} away to start afresh."
        )
    try:
        with lock_run_dir(Path(run_dir)):  # never under a run that is still writing it
            kept, copy = Journal(Path(run_dir) / JOURNAL_FILE).salvage()
    except StateError as exc:
        _fail(f"{config}: {_one_line(str(exc))}")
    typer.echo(
        f"Salvaged {kept} journal records before line {damage.line}; the whole file is {copy}.",
        err=True,
    )


def _run(prepared: Any, config: Path, mlflow: str | None, *, progress: bool) -> Any:
    """The search, tracked in MLflow when the config or ``--mlflow`` asks for it."""
    from policyopt.runconfig.run import run_local, tracking_module

    tracking = prepared.config.tracking.mlflow if prepared.config.tracking else None
    uri = mlflow or (tracking.uri if tracking else None)
    log = lambda message: typer.echo(message, err=True)  # noqa: E731
    if uri is None:
        return run_local(prepared, progress=progress, log=log)
    module = tracking_module()
    params = {"config": str(config), "models.task": prepared.config.models.task}
    with module.mlflow_listener(
        uri,
        experiment=tracking.experiment if tracking else None,
        run_name=tracking.run_name if tracking else None,
        params=params,
    ) as tracked:
        result, outcome = run_local(prepared, progress=progress, listeners=[tracked], log=log)
        if outcome["task_lm_usage"] is not None:  # the optimizer's RunFinished has only its own
            tracked.log_usage("task", outcome["task_lm_usage"], step=result.n_rollouts)
        tracked.log_run_dir(prepared.run_dir)
    outcome["mlflow"] = f"Logged to MLflow {tracked.uri} as run {tracked.run_id}."
    return result, outcome


def _print_outcome(result: Any, outcome: dict[str, Any], where: Path) -> None:
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
    typer.echo(f"Run dir: {where} (`policyopt show {where}`, `policyopt plot {where}`)")
    if outcome.get("mlflow"):
        typer.echo(outcome["mlflow"])


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
