"""``policyopt serve`` and ``policyopt job submit|status|stream|cancel|results``.

Only typer is imported here; the server (fastapi, uvicorn) and the client (httpx) load when a
command runs, so ``policyopt --help`` stays fast.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:  # pragma: no cover
    from policyopt.remote.client import JobEvent, JobResults, PolicyOptimizationJob

__all__ = ["job_app", "serve"]

job_app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Submit and follow optimization jobs on a policyopt job server.",
)

BackendOption = Annotated[
    str | None,
    typer.Option(
        "--backend-url",
        envvar="POLICYOPT_BACKEND_URL",
        help="Job server URL, e.g. http://127.0.0.1:8000.",
    ),
]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="POLICYOPT_API_KEY",
        help="API key for the job server.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the raw JSON.")]


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(code)


def _on_job(
    job_id: str,
    backend_url: str | None,
    api_key: str | None,
    action: Callable[[PolicyOptimizationJob], Any],
) -> Any:
    """``action(job)`` on the job with this id (its connections closed after); a policyopt
    error becomes a one-line message and exit code 2."""
    from policyopt.remote.client import PolicyOptimizationJob

    def go() -> Any:
        with PolicyOptimizationJob.from_job_id(job_id, backend_url, api_key) as job:
            return action(job)

    return _run(go)


def _run(action: Any) -> Any:
    """Run ``action()``; a policyopt error becomes a one-line message and exit code 2."""
    from policyopt.errors import PolicyOptError

    try:
        return action()
    except PolicyOptError as exc:
        raise _fail(str(exc)) from None


def _print_event(event: JobEvent) -> None:
    text = event.message or event.type
    typer.echo(f"{event.seq:>5}  {event.type:<22} {text}")


def _summary(results: JobResults) -> int:
    typer.echo(f"job {results.job_id}: {results.status.value}")
    if results.error:
        typer.echo(f"error: {results.error}")
    if results.best_score is not None:
        typer.echo(f"best validation score: {results.best_score:.4f}")
    text = results.prompt_text(1)
    if text is not None:
        typer.echo(f"best prompt: {text}")
    if results.test:
        typer.echo(
            "test: "
            + ", ".join(f"{k} {v:.4f}" for k, v in results.test.items() if k in ("seed", "best"))
        )
    return 0 if results.succeeded else 1


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    """``--set`` arguments, read as ``policyopt optimize`` reads them (TOML, JSON or text)."""
    from policyopt.runconfig.schema import parse_override

    out: dict[str, Any] = {}
    for item in items:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise _fail(
                f"--set takes dotted.key=value (value in TOML/JSON or plain text); got {item!r}"
            )
        out.update([parse_override(item)])
    return out


@job_app.command("submit")
def submit(
    config: Annotated[Path, typer.Argument(help="Job config TOML ([policy_optimization]).")],
    wait: Annotated[bool, typer.Option("--wait", help="Poll until the job ends.")] = False,
    stream: Annotated[
        bool, typer.Option("--stream", help="Print the job's events until it ends.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait/--stream.")] = 3600.0,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Override a config key: dotted.key=value (repeatable).",
        ),
    ] = None,
    skip_health_check: Annotated[
        bool, typer.Option(help="Submit without checking the task app's /health first.")
    ] = False,
    backend_url: BackendOption = None,
    api_key: KeyOption = None,
) -> None:
    """Submit a job; prints its id (then follows it with --wait or --stream)."""
    from policyopt.remote.client import PolicyOptimizationJob

    def go() -> int:
        with PolicyOptimizationJob.from_config(
            config,
            backend_url,
            api_key,
            overrides=_parse_overrides(overrides or []),
            skip_health_check=skip_health_check,
        ) as job:
            typer.echo(job.submit())
            if stream:
                return _summary(job.stream_until_complete(timeout=timeout, on_event=_print_event))
            if wait:
                return _summary(
                    job.poll_until_complete(timeout=timeout, interval=2.0, progress=True)
                )
            return 0

    code = _run(go)
    if code:
        raise typer.Exit(code)


@job_app.command("status")
def status(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    as_json: JsonOption = False,
    backend_url: BackendOption = None,
    api_key: KeyOption = None,
) -> None:
    """Show a job's state, progress and best score so far."""
    state = _on_job(job_id, backend_url, api_key, lambda job: job.get_status())
    if as_json:
        typer.echo(state.model_dump_json(indent=2))
        return
    best = "-" if state.best_score is None else f"{state.best_score:.4f}"
    typer.echo(
        f"job {state.job_id} ({state.algorithm}): {state.status.value}, "
        f"{state.progress.rollouts_used}/{state.progress.max_rollouts or '?'} rollouts, "
        f"best {best}"
    )
    if state.error:
        typer.echo(f"error: {state.error}")


@job_app.command("stream")
def stream_command(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    timeout: Annotated[float, typer.Option(help="Seconds to follow the job.")] = 3600.0,
    backend_url: BackendOption = None,
    api_key: KeyOption = None,
) -> None:
    """Print a job's events as they happen, until it ends (exit 0 when it succeeded)."""
    code = _on_job(
        job_id,
        backend_url,
        api_key,
        lambda job: _summary(job.stream_until_complete(timeout=timeout, on_event=_print_event)),
    )
    if code:
        raise typer.Exit(code)


@job_app.command("cancel")
def cancel(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    reason: Annotated[str | None, typer.Option(help="Why (kept with the job).")] = None,
    backend_url: BackendOption = None,
    api_key: KeyOption = None,
) -> None:
    """Cancel a job: at once if it waits, else at the optimizer's next check."""
    state = _on_job(job_id, backend_url, api_key, lambda job: job.cancel(reason))
    typer.echo(f"job {state.job_id}: {state.status.value}")


@job_app.command("results")
def results(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    as_json: JsonOption = False,
    top: Annotated[int, typer.Option(help="How many ranked prompts to show.")] = 5,
    backend_url: BackendOption = None,
    api_key: KeyOption = None,
) -> None:
    """Show a job's best prompt, ranked prompts and test scores."""
    data = _on_job(job_id, backend_url, api_key, lambda job: job.get_results())
    if as_json:
        typer.echo(data.model_dump_json(indent=2))
        return
    _summary(data)
    for item in data.top_prompts[:top]:
        score = "-" if item.val_score is None else f"{item.val_score:.4f}"
        text = json.dumps(item.prompt, ensure_ascii=False)
        typer.echo(f"  #{item.rank} val {score} ({item.origin}): {text[:100]}")


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    db: Annotated[
        str,
        typer.Option(
            help="Job database: a SQLite file (replicas on one host) or a "
            "postgresql://user@host:port/dbname URL (replicas on several hosts)."
        ),
    ] = "policyopt-jobs/jobs.db",
    data_dir: Annotated[Path, typer.Option(help="Directory for the jobs' run dirs.")] = Path(
        "policyopt-jobs/runs"
    ),
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY", help="Accepted API key (repeatable; also $POLICYOPT_API_KEYS)."
        ),
    ] = None,
    keys_file: Annotated[
        Path | None, typer.Option(help="File of accepted API keys, one per line.")
    ] = None,
    max_jobs: Annotated[int, typer.Option(help="Jobs running at once; the rest wait.")] = 2,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body accepted.")] = 1 << 20,
    allow_api_base: Annotated[
        bool,
        typer.Option(
            help="Let job configs set transport and credential LM settings (api_base, "
            "api_key, headers, ...). Off: jobs may set only sampling settings."
        ),
    ] = False,
    task_app_hosts: Annotated[
        list[str] | None,
        typer.Option(
            "--task-app-hosts",
            metavar="HOSTS",
            help="Hosts, IPs or networks (CIDR) task apps may be on; repeatable or "
            "comma-separated. Default: loopback only (127.0.0.0/8, ::1, localhost).",
        ),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            metavar="NAME=KEY_ENV_VAR",
            help="A model jobs may use and the environment variable holding its key: "
            "NAME=KEY_ENV_VAR (NAME exact, or a provider prefix such as 'openai/'; an owner "
            "endpoint as NAME=KEY_ENV_VAR@URL; repeatable). Every other model is refused. "
            "Default: only 'local' (the embedded model); 'local:NAME' grants another local "
            "model the library ships, once installed (local:qwen2.5-coder-0.5b).",
        ),
    ] = None,
    allow_cloud_identity: Annotated[
        bool,
        typer.Option(
            help="Allow --model grants for providers that sign in with this machine's cloud "
            "identity (bedrock, sagemaker, vertex_ai, ...) instead of a plain key."
        ),
    ] = False,
    max_active_jobs_per_key: Annotated[
        int | None, typer.Option(help="Unfinished jobs per API key (default 20).")
    ] = None,
    max_rollouts_per_key: Annotated[
        int | None, typer.Option(help="Rollouts over all of a key's jobs (default: no cap).")
    ] = None,
    max_lm_calls_per_key: Annotated[
        int | None,
        typer.Option(
            help="Optimizer-LM calls over all of a key's jobs (default: no cap); jobs must then "
            "set their algorithm's max_lm_calls."
        ),
    ] = None,
    max_job_memory_mib: Annotated[
        int | None,
        typer.Option(
            help="Memory of one job's process in MiB (default: no cap); a job past it fails "
            "with that reason."
        ),
    ] = None,
    max_cost_per_key: Annotated[
        float | None,
        typer.Option(help="LM dollars over all of a key's jobs (default: no cap)."),
    ] = None,
    policy_file: Annotated[
        Path | None,
        typer.Option(
            help="TOML file of server policy settings (see docs/job-server.md); flags win."
        ),
    ] = None,
    secret_file: Annotated[
        Path | None,
        typer.Option(
            help="Server secret file (created 0600; default: next to a SQLite --db, or next "
            "to --data-dir with PostgreSQL). Replicas must share it."
        ),
    ] = None,
    isolation: Annotated[
        str,
        typer.Option(
            help="'process': each job in its own process (requests never wait behind a "
            "job); 'thread': jobs in the server's process."
        ),
    ] = "process",
    job_niceness: Annotated[
        int,
        typer.Option(
            help="With --isolation process: how much lower the jobs' CPU priority is (0-19); "
            "a burst of requests then slows the jobs rather than the reverse (so does any "
            "other load on the machine; 0 gives jobs the server's priority)."
        ),
    ] = 10,
    replica_id: Annotated[
        str | None,
        typer.Option(
            help="This replica's name in the job leases it holds (default: host, boot id, "
            "pid and a random suffix)."
        ),
    ] = None,
    lease_seconds: Annotated[
        float,
        typer.Option(
            help="How long a running job's lease lasts without a heartbeat: when a replica "
            "dies, another one resumes its jobs after this long. Use one value for all "
            "replicas."
        ),
    ] = 30.0,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the job server (FastAPI + uvicorn). Unfinished jobs in --db resume on start.

    Several servers on one --db and one shared --data-dir are replicas of one service: they
    share the queue, and the jobs of one that dies resume on another."""
    from policyopt.remote.server.app import serve as run_server
    from policyopt.remote.server.policy import ServerPolicy

    def go() -> None:
        flags: dict[str, Any] = {}
        if allow_api_base:
            flags["allow_api_base"] = True
        if task_app_hosts:
            flags["task_app_hosts"] = [
                h.strip() for item in task_app_hosts for h in item.split(",") if h.strip()
            ]
        if model:
            flags["models"] = model
        if allow_cloud_identity:
            flags["allow_cloud_identity"] = True
        for name, value in (
            ("max_active_jobs_per_key", max_active_jobs_per_key),
            ("max_rollouts_per_key", max_rollouts_per_key),
            ("max_cost_usd_per_key", max_cost_per_key),
            ("max_lm_calls_per_key", max_lm_calls_per_key),
            ("max_job_memory_mib", max_job_memory_mib),
        ):
            if value is not None:
                flags[name] = value
        policy = (
            ServerPolicy.from_toml(policy_file, **flags)
            if policy_file is not None
            else ServerPolicy.build(**flags)
        )
        run_server(
            host=host,
            port=port,
            db_path=db,
            data_dir=data_dir,
            api_keys=api_key or [],
            keys_file=keys_file,
            max_concurrent_jobs=max_jobs,
            max_body_bytes=max_body_bytes,
            log_level=log_level,
            policy=policy,
            secret_file=secret_file,
            isolation=isolation,
            job_niceness=job_niceness,
            replica_id=replica_id,
            lease_s=lease_seconds,
        )

    _run(go)
