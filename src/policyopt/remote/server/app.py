"""The job server: a FastAPI app over the job store and runner, served by uvicorn.

Endpoints (every ``/api`` one needs ``Authorization: Bearer <key>``; a key sees only its own
jobs, anyone else's job id answers 404 exactly like a missing one)::

    GET  /health                                              liveness, no key needed
    POST /api/policy-optimization/online/jobs                 submit a job config (JSON)
    GET  /api/policy-optimization/online/jobs                 the key's jobs, newest first
    GET  /api/policy-optimization/online/jobs/{id}            status, progress, best so far
    GET  /api/policy-optimization/online/jobs/{id}/results    best prompt, ranked prompts, ...
    GET  /api/policy-optimization/online/jobs/{id}/events?since_seq=N
    GET  /api/policy-optimization/online/jobs/{id}/events/stream   server-sent events
    POST /api/jobs/{id}/cancel                                cancel (also .../jobs/{id}/cancel)

The older ``/api/prompt-learning/online/jobs`` root is an alias. Request bodies are JSON only,
size-limited (Content-Length and the bytes actually streamed), and never unpickled or
evaluated. The routes are routers by resource in :mod:`policyopt.remote.server.routers`, their
dependencies (the server's state, the store, the caller's key) in
:mod:`policyopt.remote.server.deps`; :func:`create_app` builds the state and wires them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from policyopt._version import __version__
from policyopt.errors import ConfigError
from policyopt.remote.asgi import BodyLimit
from policyopt.remote.server.deps import ServerState
from policyopt.remote.server.grants import check_installed
from policyopt.remote.server.middleware import StatusFastPath
from policyopt.remote.server.openapi import install_openapi
from policyopt.remote.server.policy import ServerPolicy
from policyopt.remote.server.routers import API_ROOTS, include_routers
from policyopt.remote.server.routers.events import MAX_SEQ
from policyopt.remote.server.routers.jobs import status_answer, status_body
from policyopt.remote.server.runner import (
    DEFAULT_LEASE_S,
    JobRunner,
    ReflectionFactory,
    TaskAppFactory,
)
from policyopt.remote.server.vault import ServerSecret, legacy_owner_id
from policyopt.remote.store import JobStore
from policyopt.remote.taskapp.outbound import OutboundPolicy

__all__ = [
    "API_ROOTS",
    "ENV_API_KEYS",
    "MAX_SEQ",
    "create_app",
    "load_api_keys",
    "run_app",
    "serve",
    "status_body",
]

logger = logging.getLogger("policyopt")

#: environment variable with comma-separated API keys the server accepts
ENV_API_KEYS = "POLICYOPT_API_KEYS"
#: seconds open connections get to finish when the server stops
GRACEFUL_S = 2
#: seconds running jobs get to reach their next check when the server stops
RUNNER_STOP_S = 4.0
#: seconds after SIGTERM/Ctrl-C at which the process exits whatever still runs
HARD_STOP_S = 9.0


def load_api_keys(
    keys: Iterable[str] = (), *, keys_file: str | Path | None = None, env: bool = True
) -> list[str]:
    """The API keys a server accepts: given ones, ``$POLICYOPT_API_KEYS`` (comma-separated)
    and a keys file (one per line, ``#`` comments); duplicates dropped, order kept."""
    found = [k.strip() for k in keys]
    if env:
        found += os.environ.get(ENV_API_KEYS, "").split(",")
    if keys_file is not None:
        path = Path(keys_file)
        if not path.is_file():
            raise ConfigError(f"API keys file {str(path)!r} does not exist.")
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                found.append(line)
    return list(dict.fromkeys(k for k in (s.strip() for s in found) if k))


def create_app(
    db_path: str | Path,
    data_dir: str | Path,
    api_keys: Iterable[str] | Mapping[str, str],
    max_concurrent_jobs: int = 2,
    max_body_bytes: int = 1 << 20,
    *,
    reflection_lm_factory: ReflectionFactory | None = None,
    task_app_factory: TaskAppFactory | None = None,
    allow_api_base: bool = False,
    health_check: bool = True,
    max_active_jobs_per_key: int | None = None,
    poll_interval: float = 0.2,
    keepalive_s: float = 15.0,
    policy: ServerPolicy | None = None,
    secret_file: str | Path | None = None,
    isolation: str = "thread",
    job_niceness: int = 10,
    replica_id: str | None = None,
    lease_s: float = DEFAULT_LEASE_S,
) -> FastAPI:
    """The job server's ASGI app; jobs run while it is being served (lifespan starts them).

    ``api_keys``: the accepted keys (a list, or ``{label: key}``); only their HMAC with the
    server secret is kept. ``policy`` is what jobs may do (:class:`ServerPolicy`: model
    settings, task-app hosts, input limits, per-key quotas); ``allow_api_base`` and
    ``max_active_jobs_per_key`` override its fields. ``secret_file`` (default: ``server.secret``
    next to the database, created 0600) keys the owner ids and seals task-app keys at rest.
    ``max_concurrent_jobs`` jobs run at once, the rest wait queued. Jobs a previous server left
    running or queued on the same ``db_path``/``data_dir`` resume when this one starts.
    ``isolation="process"`` runs each job in a child process (what ``policyopt serve`` does:
    requests never wait behind a job's Python work); the factories must then be picklable, and
    ``job_niceness`` lowers those processes' CPU priority.

    Replicas: several apps (processes, hosts) on one ``db_path`` (a SQLite file on one host,
    or a ``postgresql://`` URL) and one shared ``data_dir`` share one queue; each holds its
    running jobs under a lease of ``lease_s`` seconds, named ``replica_id``, and resumes the
    jobs of a replica that died once their leases expire. They must share the API keys and
    the server secret (with a PostgreSQL ``db_path`` it defaults to ``server.secret`` next to
    ``data_dir``).
    """
    labelled = (
        {label: key for label, key in api_keys.items()}
        if isinstance(api_keys, Mapping)
        else {f"key-{n}": key for n, key in enumerate(api_keys, start=1)}
    )
    if not labelled:
        raise ConfigError(
            "The job server needs at least one API key: pass --api-key, set "
            f"${ENV_API_KEYS} (comma-separated) or give a keys file."
        )
    updates: dict[str, Any] = {}
    if allow_api_base:
        updates["allow_api_base"] = True
    if max_active_jobs_per_key is not None:
        updates["max_active_jobs_per_key"] = max_active_jobs_per_key
    policy = ServerPolicy.build(**{**(policy or ServerPolicy()).model_dump(), **updates})
    check_installed(policy.models)  # a granted local:NAME must be servable before jobs come
    if policy.max_job_memory_mib is not None and isolation != "process":
        raise ConfigError(
            "max_job_memory_mib (--max-job-memory-mib) limits a job's own process: it needs "
            f"isolation='process' (--isolation process); got {isolation!r}."
        )
    if isinstance(max_body_bytes, bool) or max_body_bytes < 1:
        raise ConfigError(f"max_body_bytes must be >= 1; got {max_body_bytes!r}.")
    store = JobStore(db_path)
    beside = store.path if store.path is not None else Path(data_dir)
    secret = ServerSecret.load_or_create(
        secret_file if secret_file is not None else beside.parent / "server.secret"
    )
    owners = {secret.owner_id(key): label for label, key in labelled.items()}
    for key in labelled.values():  # jobs of a server that stored plain SHA-256 owner ids
        store.rename_owner(legacy_owner_id(key), secret.owner_id(key))
    store.set_api_keys(owners)
    outbound = OutboundPolicy(policy.task_app_hosts)
    runner = JobRunner(
        store,
        data_dir,
        max_concurrent_jobs=max_concurrent_jobs,
        reflection_lm_factory=reflection_lm_factory,
        task_app_factory=task_app_factory,
        health_check=health_check,
        policy=policy,
        secret=secret,
        isolation=isolation,
        job_niceness=job_niceness,
        replica_id=replica_id,
        lease_s=lease_s,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        requeued = await asyncio.to_thread(runner.start)
        if requeued:
            logger.info("requeued %d unfinished job(s): %s", len(requeued), requeued)
        try:
            yield
        finally:
            await asyncio.to_thread(runner.shutdown, RUNNER_STOP_S)
            store.close()

    app = FastAPI(
        title="policyopt job server",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.store = store
    app.state.runner = runner

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return JSONResponse({"detail": f"Invalid request: {problems}"}, status_code=422)

    state = ServerState(
        store=store,
        runner=runner,
        secret=secret,
        policy=policy,
        outbound=outbound,
        owner_ids=tuple(owners),
        poll_interval=poll_interval,
        keepalive_s=keepalive_s,
    )
    app.state.server = state
    include_routers(app)
    install_openapi(app, API_ROOTS)

    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.add_middleware(
        StatusFastPath,
        answer=lambda job_id, header: status_answer(state, job_id, header),
        roots=API_ROOTS,
    )
    return app


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    db_path: str | Path = "policyopt-jobs/jobs.db",
    data_dir: str | Path = "policyopt-jobs/runs",
    api_keys: Iterable[str] = (),
    keys_file: str | Path | None = None,
    max_concurrent_jobs: int = 2,
    max_body_bytes: int = 1 << 20,
    allow_api_base: bool = False,
    log_level: str = "info",
    policy: ServerPolicy | None = None,
    secret_file: str | Path | None = None,
    isolation: str = "process",
    job_niceness: int = 10,
    replica_id: str | None = None,
    lease_s: float = DEFAULT_LEASE_S,
) -> None:
    """Serve the job server with uvicorn until interrupted (SIGTERM or Ctrl-C stop it within
    seconds: running jobs go back to the queue and resume on the next start, or at once on
    another replica sharing the database)."""
    keys = load_api_keys(api_keys, keys_file=keys_file)
    app = create_app(
        db_path,
        data_dir,
        keys,
        max_concurrent_jobs=max_concurrent_jobs,
        max_body_bytes=max_body_bytes,
        allow_api_base=allow_api_base,
        policy=policy,
        secret_file=secret_file,
        isolation=isolation,
        job_niceness=job_niceness,
        replica_id=replica_id,
        lease_s=lease_s,
    )
    run_app(app, host=host, port=port, log_level=log_level)


def run_app(
    app: Any, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info"
) -> None:
    """Serve a job server app with uvicorn in the foreground until SIGTERM or Ctrl-C.

    Stopping is prompt (about 7 s at most, well under 10): open connections, event streams
    included, get ``GRACEFUL_S`` seconds, then the runner gets ``RUNNER_STOP_S`` to put its
    running jobs back in the queue (they resume on the next start). Whatever still runs
    ``HARD_STOP_S`` seconds after the signal (a request stuck in a thread, a wedged event
    loop) does not hold the process: it exits then. Slow clients are guarded against
    (:func:`policyopt.remote._serving.uvicorn_config`).
    """
    import uvicorn

    from policyopt.remote._serving import exit_later, uvicorn_config

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            exit_later(HARD_STOP_S)
            super().handle_exit(sig, frame)

    config = uvicorn_config(
        app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=GRACEFUL_S
    )
    _Server(config).run()
