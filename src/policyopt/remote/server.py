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
evaluated.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from policyopt._version import __version__
from policyopt.errors import ConfigError
from policyopt.remote.api_schema import (
    CancelBody,
    EventsBody,
    HealthBody,
    JobListBody,
    ResultsBody,
    StatusBody,
    errors,
    install_openapi,
)
from policyopt.remote.middleware import BodyLimit, StatusFastPath
from policyopt.remote.outbound import OutboundPolicy
from policyopt.remote.policy import PolicyViolation, ServerPolicy
from policyopt.remote.runner import (
    DEFAULT_LEASE_S,
    JobRunner,
    ReflectionFactory,
    TaskAppFactory,
)
from policyopt.remote.store import JobRecord, JobState, JobStore
from policyopt.remote.submission import check_quotas, checked_config, parse_json
from policyopt.remote.vault import ServerSecret, legacy_owner_id

__all__ = [
    "API_ROOTS",
    "ENV_API_KEYS",
    "create_app",
    "load_api_keys",
    "run_app",
    "serve",
    "status_body",
]

logger = logging.getLogger("policyopt")

#: the job routes' roots: the current one first, then the older Synth spelling
API_ROOTS = ("/api/policy-optimization/online/jobs", "/api/prompt-learning/online/jobs")
#: environment variable with comma-separated API keys the server accepts
ENV_API_KEYS = "POLICYOPT_API_KEYS"
#: seconds open connections get to finish when the server stops
GRACEFUL_S = 2
#: seconds running jobs get to reach their next check when the server stops
RUNNER_STOP_S = 4.0
#: seconds after SIGTERM/Ctrl-C at which the process exits whatever still runs
HARD_STOP_S = 9.0
#: what a job id may look like (anything else is answered like a missing job, unread)
_JOB_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
#: the largest event seq the databases hold (PostgreSQL's INTEGER column: 32-bit signed)
MAX_SEQ = 2**31 - 1
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


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


def _iso(value: float | None) -> str | None:
    if value is None:
        return None
    return dt.datetime.fromtimestamp(value, tz=dt.timezone.utc).isoformat()


def status_body(job: JobRecord) -> dict[str, Any]:
    """The status JSON of a job (never its config: that holds the task app's key)."""
    return {
        "job_id": job.id,
        "id": job.id,
        "status": job.status.value,
        "algorithm": job.algorithm,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "progress": {
            "rollouts_used": job.progress.get("rollouts_used", 0),
            "max_rollouts": job.progress.get("max_rollouts"),
        },
        "best_score": job.best_score,
        "best_prompt": job.best_prompt,
        "error": job.error,
        "cancel_requested": job.cancel_requested,
        "last_seq": job.last_seq,
    }


def create_app(  # noqa: C901, PLR0915 - the routes are closures over the app state; to split into routers
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
    submit_lock = asyncio.Lock()  # the quota check and the insert, one submit at a time
    owner_ids = list(owners)

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

    def authenticate(header: str | None) -> str:
        """The owner id of an ``Authorization`` header; HTTPException 401 when it has none."""
        if not header:
            raise HTTPException(
                401,
                "Missing API key: send the header 'Authorization: Bearer <key>'.",
                headers={"WWW-Authenticate": "Bearer"},
            )
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(
                401,
                "Malformed Authorization header: expected 'Bearer <key>'.",
                headers={"WWW-Authenticate": 'Bearer error="invalid_request"'},
            )
        digest = secret.owner_id(token)
        match = None
        for known in owner_ids:  # compare every one, in constant time
            if hmac.compare_digest(digest, known):
                match = known
        if match is None:
            raise HTTPException(
                401,
                "Invalid API key.",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return match

    async def owner(request: Request) -> str:  # no I/O: no thread hop
        return authenticate(request.headers.get("authorization"))

    def own_job(job_id: str, who: str, full: bool = True) -> JobRecord:
        job = store.get_job(job_id, owner=who, full=full) if _JOB_ID.match(job_id) else None
        if job is None:  # the same answer for a missing job and for someone else's
            raise HTTPException(404, "No such job for this API key.")
        return job

    @app.get("/health", responses={200: {"model": HealthBody}})
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "jobs": runner.counts()}

    async def submit(request: Request, who: str = Depends(owner)) -> JSONResponse:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type and content_type != "application/json" and "+json" not in content_type:
            raise HTTPException(
                415, f"Send the job as JSON (Content-Type: application/json), not {content_type}."
            )
        raw = await request.body()
        # off the event loop: parsing and checking a body is O(its size), but up to 1 MB
        config = await asyncio.to_thread(checked_config, raw, policy)
        try:
            await asyncio.wait_for(asyncio.to_thread(outbound.check_url, config.task_app.url), 10)
        except PolicyViolation as exc:
            raise HTTPException(422, str(exc)) from None
        except asyncio.TimeoutError:
            raise HTTPException(
                422, "task_app.url: its host name did not resolve within 10 s"
            ) from None
        stored = secret.seal_config(config.to_dict())
        async with submit_lock:
            usage = await asyncio.to_thread(store.usage, who)
            check_quotas(policy, usage, config)
            job = await asyncio.to_thread(
                store.create_job,
                owner=who,
                algorithm=config.algorithm,
                config=stored,
                max_rollouts=config.budget.max_rollouts,
            )
        await asyncio.to_thread(runner.submit, job.id)
        fresh = await asyncio.to_thread(store.get_job, job.id)
        assert fresh is not None
        return JSONResponse(status_body(fresh), status_code=201)

    def list_jobs(who: str = Depends(owner), limit: int = Query(50, ge=1, le=500)) -> JSONResponse:
        jobs = store.list_jobs(owner=who, limit=limit, full=False)
        return JSONResponse({"jobs": [status_body(j) for j in jobs]})

    def status_answer(job_id: str, header: str | None) -> JSONResponse:
        """``GET JOBS/{id}``: one indexed read of the WAL database (never blocked by the jobs'
        writes), done on the event loop: cheaper than a thread hop, and jobs run elsewhere."""
        try:
            who = authenticate(header)
            return JSONResponse(status_body(own_job(job_id, who, full=False)))
        except HTTPException as exc:
            return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)

    async def get_status(job_id: str, request: Request) -> JSONResponse:
        # served by StatusFastPath before FastAPI; this route documents it and is the fallback
        return status_answer(job_id, request.headers.get("authorization"))

    def get_results(job_id: str, who: str = Depends(owner)) -> dict[str, Any]:
        job = own_job(job_id, who)
        results = job.results or {}
        return {
            **status_body(job),
            "best_prompt": results.get("best_prompt", job.best_prompt),
            "best_score": results.get("best_score", job.best_score),
            "final": job.results is not None,
            "stop_reason": results.get("stop_reason"),
            "top_prompts": results.get("top_prompts", []),
            "history": results.get("history", []),
            "test": results.get("test"),
            "usage": results.get("usage"),
        }

    def get_events(
        job_id: str,
        who: str = Depends(owner),
        since_seq: int = Query(0, ge=0, le=MAX_SEQ),
        limit: int = Query(500, ge=1, le=5000),
    ) -> JSONResponse:
        job = own_job(job_id, who, full=False)
        events = [e.to_dict() for e in store.events(job_id, since_seq=since_seq, limit=limit)]
        return JSONResponse(
            {
                "job_id": job_id,
                "status": job.status.value,
                "events": events,
                "next_seq": events[-1]["seq"] if events else since_seq,
            }
        )

    async def stream_events(
        job_id: str,
        request: Request,
        who: str = Depends(owner),
        since_seq: int = Query(0, ge=0, le=MAX_SEQ),
    ) -> StreamingResponse:
        own_job(job_id, who, False)  # a light read, on the loop like the status route
        since = since_seq
        header = request.headers.get("last-event-id")
        if header:
            try:
                since = max(0, int(header.strip()[:40]))
                if since > MAX_SEQ:
                    raise ValueError(header)
            except ValueError:
                raise HTTPException(
                    400, f"Last-Event-ID must be an event seq (an integer); got {header[:40]!r}."
                ) from None
        return StreamingResponse(
            _sse(store, job_id, since, request, poll_interval, keepalive_s),
            media_type="text/event-stream",
            headers=_SSE_HEADERS,
        )

    async def cancel(job_id: str, request: Request, who: str = Depends(owner)) -> dict[str, Any]:
        raw = await request.body()
        reason: str | None = None
        if raw.strip():
            data = await asyncio.to_thread(parse_json, raw, policy)
            if not isinstance(data, dict) or not isinstance(
                data.get("reason", ""), (str, type(None))
            ):
                raise HTTPException(422, 'The body must be {"reason": "<text>"} or empty.')
            reason = data.get("reason")
            if reason is not None:
                reason = reason[:1000]
        before = await asyncio.to_thread(own_job, job_id, who)
        job = await asyncio.to_thread(runner.cancel, job_id, reason)
        assert job is not None
        body = status_body(job)
        if before.status.terminal:
            body["message"] = f"the job had already ended ({before.status.value})"
        elif job.status is JobState.CANCELLED:
            body["message"] = "cancelled before it started"
        else:
            body["message"] = "cancel requested: the job stops at its next check"
        return body

    common = (400, 401, 413, 422)
    for root in API_ROOTS:
        app.add_api_route(
            root,
            submit,
            methods=["POST"],
            status_code=201,
            responses={201: {"model": StatusBody}, **errors(*common, 415, 429)},
        )
        app.add_api_route(
            root,
            list_jobs,
            methods=["GET"],
            responses={200: {"model": JobListBody}, **errors(*common)},
        )
        one = {**errors(*common, 404)}
        app.add_api_route(
            root + "/{job_id}",
            get_status,
            methods=["GET"],
            responses={200: {"model": StatusBody}, **one},
        )
        app.add_api_route(
            root + "/{job_id}/results",
            get_results,
            methods=["GET"],
            responses={200: {"model": ResultsBody}, **one},
        )
        app.add_api_route(
            root + "/{job_id}/events",
            get_events,
            methods=["GET"],
            responses={200: {"model": EventsBody}, **one},
        )
        app.add_api_route(
            root + "/{job_id}/events/stream",
            stream_events,
            methods=["GET"],
            response_class=StreamingResponse,
            responses={
                200: {
                    "description": "server-sent events",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **one,
            },
        )
        app.add_api_route(
            root + "/{job_id}/cancel",
            cancel,
            methods=["POST"],
            responses={200: {"model": CancelBody}, **one},
        )
    app.add_api_route(
        "/api/jobs/{job_id}/cancel",
        cancel,
        methods=["POST"],
        responses={200: {"model": CancelBody}, **errors(*common, 404)},
    )
    install_openapi(app, API_ROOTS)

    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.add_middleware(StatusFastPath, answer=status_answer, roots=API_ROOTS)
    return app


async def _sse(
    store: JobStore,
    job_id: str,
    since: int,
    request: Request,
    poll_interval: float,
    keepalive_s: float,
) -> AsyncIterator[str]:
    """Server-sent events after ``since``, until the terminal event; reads off the loop."""
    last = since
    idle = 0.0
    yield "retry: 1000\n\n"
    while True:
        events = await asyncio.to_thread(store.events, job_id, last, 500)
        for event in events:
            payload = json.dumps(event.to_dict(), ensure_ascii=False)
            yield f"id: {event.seq}\nevent: {event.type}\ndata: {payload}\n\n"
            last = event.seq
            if event.terminal:
                return
        if events:
            idle = 0.0
            continue
        job = store.get_job(job_id, full=False)  # light, on the loop
        if job is None or (job.status.terminal and job.last_seq <= last):
            return  # its terminal event was sent before (a reconnect after the end)
        if await request.is_disconnected():
            return
        await asyncio.sleep(poll_interval)
        idle += poll_interval
        if idle >= keepalive_s:
            idle = 0.0
            yield ": keep-alive\n\n"


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
