"""``policyopt task-app``, ``serve`` and ``job``: the remote backend's commands."""

from __future__ import annotations

from typing import Annotated

import typer

from policyopt.cli._app import app
from policyopt.remote.cli import job_app, serve


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
    from policyopt.remote.taskapp.app import load_app

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


app.command("serve")(serve)
app.add_typer(job_app, name="job")
