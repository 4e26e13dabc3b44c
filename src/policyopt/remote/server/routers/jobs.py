"""The jobs resource: submit, list, status, results and cancel (mounted under every API root,
plus the old ``/api/jobs/{id}/cancel`` path).

A route gets the caller's owner id, the store or the server's state from
:mod:`policyopt.remote.server.deps`; the status route is answered by :func:`status_answer`,
which the server's status fast path calls too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from policyopt.remote.api_schema import CancelBody, JobListBody, ResultsBody, StatusBody, errors
from policyopt.remote.errors import PolicyViolation
from policyopt.remote.server.deps import Owner, ServerState, State, Store, authenticate, own_job
from policyopt.remote.server.submission import (
    check_quotas,
    checked_config,
    parse_json,
    reservation,
)
from policyopt.remote.store import JobRecord, JobState

__all__ = ["legacy_router", "router", "status_answer", "status_body"]

#: the errors any jobs route may answer
_COMMON = (400, 401, 413, 422)
#: ... and those about one job
_ONE = errors(*_COMMON, 404)

router = APIRouter()
#: the older cancel path, outside the API roots
legacy_router = APIRouter()


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


def status_answer(state: ServerState, job_id: str, header: str | None) -> JSONResponse:
    """``GET JOBS/{id}``: one indexed read of the WAL database (never blocked by the jobs'
    writes), done on the event loop: cheaper than a thread hop, and jobs run elsewhere."""
    try:
        who = authenticate(state, header)
        return JSONResponse(status_body(own_job(state.store, job_id, who, full=False)))
    except HTTPException as exc:
        return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)


@router.post(
    "",
    status_code=201,
    responses={201: {"model": StatusBody}, **errors(*_COMMON, 415, 429)},
)
async def submit(
    request: Request,
    who: Owner,
    state: State,
) -> JSONResponse:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and content_type != "application/json" and "+json" not in content_type:
        raise HTTPException(
            415, f"Send the job as JSON (Content-Type: application/json), not {content_type}."
        )
    raw = await request.body()
    # off the event loop: parsing and checking a body is O(its size), but up to 1 MB
    config = await asyncio.to_thread(checked_config, raw, state.policy)
    try:
        await asyncio.wait_for(asyncio.to_thread(state.outbound.check_url, config.task_app.url), 10)
    except PolicyViolation as exc:
        raise HTTPException(422, str(exc)) from None
    except asyncio.TimeoutError:
        raise HTTPException(
            422, "task_app.url: its host name did not resolve within 10 s"
        ) from None
    stored = state.secret.seal_config(config.to_dict())
    reserved = reservation(state.policy, config)
    # the quota check and the insert are one transaction of the store, one per key at a
    # time on every replica: parallel submits cannot both fit into the same room
    job = await asyncio.to_thread(
        state.store.create_job,
        owner=who,
        algorithm=config.algorithm,
        config=stored,
        max_rollouts=config.budget.max_rollouts,
        reserved=reserved,
        admit=lambda usage: check_quotas(state.policy, usage, config),
    )
    await asyncio.to_thread(state.runner.submit, job.id)
    fresh = await asyncio.to_thread(state.store.get_job, job.id)
    assert fresh is not None
    return JSONResponse(status_body(fresh), status_code=201)


@router.get("", responses={200: {"model": JobListBody}, **errors(*_COMMON)})
def list_jobs(
    who: Owner,
    store: Store,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JSONResponse:
    jobs = store.list_jobs(owner=who, limit=limit, full=False)
    return JSONResponse({"jobs": [status_body(j) for j in jobs]})


@router.get("/{job_id}", responses={200: {"model": StatusBody}, **_ONE})
async def get_status(job_id: str, request: Request, state: State) -> JSONResponse:
    # served by StatusFastPath before FastAPI; this route documents it and is the fallback
    return status_answer(state, job_id, request.headers.get("authorization"))


@router.get("/{job_id}/results", responses={200: {"model": ResultsBody}, **_ONE})
def get_results(job_id: str, who: Owner, store: Store) -> dict[str, Any]:
    job = own_job(store, job_id, who)
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


@router.post("/{job_id}/cancel", responses={200: {"model": CancelBody}, **_ONE})
@legacy_router.post("/api/jobs/{job_id}/cancel", responses={200: {"model": CancelBody}, **_ONE})
async def cancel(
    job_id: str,
    request: Request,
    who: Owner,
    state: State,
) -> dict[str, Any]:
    raw = await request.body()
    reason: str | None = None
    if raw.strip():
        data = await asyncio.to_thread(parse_json, raw, state.policy)
        if not isinstance(data, dict) or not isinstance(data.get("reason", ""), (str, type(None))):
            raise HTTPException(422, 'The body must be {"reason": "<text>"} or empty.')
        reason = data.get("reason")
        if reason is not None:
            reason = reason[:1000]
    before = await asyncio.to_thread(own_job, state.store, job_id, who)
    job = await asyncio.to_thread(state.runner.cancel, job_id, reason)
    assert job is not None
    body = status_body(job)
    if before.status.terminal:
        body["message"] = f"the job had already ended ({before.status.value})"
    elif job.status is JobState.CANCELLED:
        body["message"] = "cancelled before it started"
    else:
        body["message"] = "cancel requested: the job stops at its next check"
    return body
