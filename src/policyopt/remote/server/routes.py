"""The job server's routes: authentication, the jobs endpoints, and the event stream.

:class:`JobsAPI` holds what the routes share (the store, the runner, the server secret, the
policy) and has one method per endpoint; :func:`add_job_routes` puts them under every API root
with their documented answers; :func:`create_app` (:mod:`policyopt.remote.server.app`) builds the
state and wires it. A route finds its owner through :func:`owner` (the API key's owner id) and
its :class:`JobsAPI` on ``app.state.jobs_api``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from policyopt._version import __version__
from policyopt.remote.api_schema import (
    CancelBody,
    EventsBody,
    JobListBody,
    ResultsBody,
    StatusBody,
    errors,
)
from policyopt.remote.server.policy import PolicyViolation, ServerPolicy
from policyopt.remote.server.runner import JobRunner
from policyopt.remote.server.submission import check_quotas, checked_config, parse_json, reservation
from policyopt.remote.server.vault import ServerSecret
from policyopt.remote.store import JobRecord, JobState, JobStore
from policyopt.remote.taskapp.outbound import OutboundPolicy

__all__ = ["API_ROOTS", "MAX_SEQ", "JobsAPI", "add_job_routes", "owner", "status_body"]

#: the job routes' roots: the current one first, then the older Synth spelling
API_ROOTS = ("/api/policy-optimization/online/jobs", "/api/prompt-learning/online/jobs")
#: what a job id may look like (anything else is answered like a missing job, unread)
_JOB_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
#: the largest event seq the databases hold (PostgreSQL's INTEGER column: 32-bit signed)
MAX_SEQ = 2**31 - 1
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


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


async def owner(request: Request) -> str:  # no I/O: no thread hop
    """The owner id of the request's API key (the routes' dependency); 401 without one."""
    api: JobsAPI = request.app.state.jobs_api
    return api.authenticate(request.headers.get("authorization"))


class JobsAPI:
    """The job server's routes over one store, runner, secret and policy (wired by
    :func:`create_app`; each route is a method, its owner found by :func:`owner`)."""

    def __init__(
        self,
        *,
        store: JobStore,
        runner: JobRunner,
        secret: ServerSecret,
        policy: ServerPolicy,
        outbound: OutboundPolicy,
        owner_ids: list[str],
        poll_interval: float,
        keepalive_s: float,
    ) -> None:
        self.store = store
        self.runner = runner
        self.secret = secret
        self.policy = policy
        self.outbound = outbound
        self.owner_ids = owner_ids
        self.poll_interval = poll_interval
        self.keepalive_s = keepalive_s

    def authenticate(self, header: str | None) -> str:
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
        digest = self.secret.owner_id(token)
        match = None
        for known in self.owner_ids:  # compare every one, in constant time
            if hmac.compare_digest(digest, known):
                match = known
        if match is None:
            raise HTTPException(
                401,
                "Invalid API key.",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return match

    def own_job(self, job_id: str, who: str, full: bool = True) -> JobRecord:
        job = self.store.get_job(job_id, owner=who, full=full) if _JOB_ID.match(job_id) else None
        if job is None:  # the same answer for a missing job and for someone else's
            raise HTTPException(404, "No such job for this API key.")
        return job

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "jobs": self.runner.counts()}

    async def submit(self, request: Request, who: str = Depends(owner)) -> JSONResponse:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type and content_type != "application/json" and "+json" not in content_type:
            raise HTTPException(
                415, f"Send the job as JSON (Content-Type: application/json), not {content_type}."
            )
        raw = await request.body()
        # off the event loop: parsing and checking a body is O(its size), but up to 1 MB
        config = await asyncio.to_thread(checked_config, raw, self.policy)
        try:
            await asyncio.wait_for(
                asyncio.to_thread(self.outbound.check_url, config.task_app.url), 10
            )
        except PolicyViolation as exc:
            raise HTTPException(422, str(exc)) from None
        except asyncio.TimeoutError:
            raise HTTPException(
                422, "task_app.url: its host name did not resolve within 10 s"
            ) from None
        stored = self.secret.seal_config(config.to_dict())
        reserved = reservation(self.policy, config)
        # the quota check and the insert are one transaction of the store, one per key at a
        # time on every replica: parallel submits cannot both fit into the same room
        job = await asyncio.to_thread(
            self.store.create_job,
            owner=who,
            algorithm=config.algorithm,
            config=stored,
            max_rollouts=config.budget.max_rollouts,
            reserved=reserved,
            admit=lambda usage: check_quotas(self.policy, usage, config),
        )
        await asyncio.to_thread(self.runner.submit, job.id)
        fresh = await asyncio.to_thread(self.store.get_job, job.id)
        assert fresh is not None
        return JSONResponse(status_body(fresh), status_code=201)

    def list_jobs(
        self, who: str = Depends(owner), limit: int = Query(50, ge=1, le=500)
    ) -> JSONResponse:
        jobs = self.store.list_jobs(owner=who, limit=limit, full=False)
        return JSONResponse({"jobs": [status_body(j) for j in jobs]})

    def status_answer(self, job_id: str, header: str | None) -> JSONResponse:
        """``GET JOBS/{id}``: one indexed read of the WAL database (never blocked by the jobs'
        writes), done on the event loop: cheaper than a thread hop, and jobs run elsewhere."""
        try:
            who = self.authenticate(header)
            return JSONResponse(status_body(self.own_job(job_id, who, full=False)))
        except HTTPException as exc:
            return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)

    async def get_status(self, job_id: str, request: Request) -> JSONResponse:
        # served by StatusFastPath before FastAPI; this route documents it and is the fallback
        return self.status_answer(job_id, request.headers.get("authorization"))

    def get_results(self, job_id: str, who: str = Depends(owner)) -> dict[str, Any]:
        job = self.own_job(job_id, who)
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
        self,
        job_id: str,
        who: str = Depends(owner),
        since_seq: int = Query(0, ge=0, le=MAX_SEQ),
        limit: int = Query(500, ge=1, le=5000),
    ) -> JSONResponse:
        job = self.own_job(job_id, who, full=False)
        events = [e.to_dict() for e in self.store.events(job_id, since_seq=since_seq, limit=limit)]
        return JSONResponse(
            {
                "job_id": job_id,
                "status": job.status.value,
                "events": events,
                "next_seq": events[-1]["seq"] if events else since_seq,
            }
        )

    async def stream_events(
        self,
        job_id: str,
        request: Request,
        who: str = Depends(owner),
        since_seq: int = Query(0, ge=0, le=MAX_SEQ),
    ) -> StreamingResponse:
        self.own_job(job_id, who, False)  # a light read, on the loop like the status route
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
            _sse(self.store, job_id, since, request, self.poll_interval, self.keepalive_s),
            media_type="text/event-stream",
            headers=_SSE_HEADERS,
        )

    async def cancel(
        self, job_id: str, request: Request, who: str = Depends(owner)
    ) -> dict[str, Any]:
        raw = await request.body()
        reason: str | None = None
        if raw.strip():
            data = await asyncio.to_thread(parse_json, raw, self.policy)
            if not isinstance(data, dict) or not isinstance(
                data.get("reason", ""), (str, type(None))
            ):
                raise HTTPException(422, 'The body must be {"reason": "<text>"} or empty.')
            reason = data.get("reason")
            if reason is not None:
                reason = reason[:1000]
        before = await asyncio.to_thread(self.own_job, job_id, who)
        job = await asyncio.to_thread(self.runner.cancel, job_id, reason)
        assert job is not None
        body = status_body(job)
        if before.status.terminal:
            body["message"] = f"the job had already ended ({before.status.value})"
        elif job.status is JobState.CANCELLED:
            body["message"] = "cancelled before it started"
        else:
            body["message"] = "cancel requested: the job stops at its next check"
        return body


def add_job_routes(app: FastAPI, api: JobsAPI) -> None:
    """The jobs routes under every API root (and the old cancel path), with their answers."""
    common = (400, 401, 413, 422)
    for root in API_ROOTS:
        app.add_api_route(
            root,
            api.submit,
            methods=["POST"],
            status_code=201,
            responses={201: {"model": StatusBody}, **errors(*common, 415, 429)},
        )
        app.add_api_route(
            root,
            api.list_jobs,
            methods=["GET"],
            responses={200: {"model": JobListBody}, **errors(*common)},
        )
        one = {**errors(*common, 404)}
        app.add_api_route(
            root + "/{job_id}",
            api.get_status,
            methods=["GET"],
            responses={200: {"model": StatusBody}, **one},
        )
        app.add_api_route(
            root + "/{job_id}/results",
            api.get_results,
            methods=["GET"],
            responses={200: {"model": ResultsBody}, **one},
        )
        app.add_api_route(
            root + "/{job_id}/events",
            api.get_events,
            methods=["GET"],
            responses={200: {"model": EventsBody}, **one},
        )
        app.add_api_route(
            root + "/{job_id}/events/stream",
            api.stream_events,
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
            api.cancel,
            methods=["POST"],
            responses={200: {"model": CancelBody}, **one},
        )
    app.add_api_route(
        "/api/jobs/{job_id}/cancel",
        api.cancel,
        methods=["POST"],
        responses={200: {"model": CancelBody}, **errors(*common, 404)},
    )


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
