"""A job's events: one page of them (``GET JOBS/{id}/events``) and their server-sent stream
(``GET JOBS/{id}/events/stream``, resumable with ``Last-Event-ID``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from policyopt.remote.api_schema import EventsBody, errors
from policyopt.remote.server.deps import Owner, State, Store, own_job
from policyopt.remote.store import JobStore

__all__ = ["MAX_SEQ", "router"]

#: the largest event seq the databases hold (PostgreSQL's INTEGER column: 32-bit signed)
MAX_SEQ = 2**31 - 1
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}
_ONE = errors(400, 401, 413, 422, 404)

router = APIRouter()


@router.get("/{job_id}/events", responses={200: {"model": EventsBody}, **_ONE})
def get_events(
    job_id: str,
    who: Owner,
    store: Store,
    since_seq: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> JSONResponse:
    job = own_job(store, job_id, who, full=False)
    events = [e.to_dict() for e in store.events(job_id, since_seq=since_seq, limit=limit)]
    return JSONResponse(
        {
            "job_id": job_id,
            "status": job.status.value,
            "events": events,
            "next_seq": events[-1]["seq"] if events else since_seq,
        }
    )


@router.get(
    "/{job_id}/events/stream",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "server-sent events",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **_ONE,
    },
)
async def stream_events(
    job_id: str,
    request: Request,
    who: Owner,
    state: State,
    since_seq: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
) -> StreamingResponse:
    own_job(state.store, job_id, who, False)  # a light read, on the loop like the status route
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
        _sse(state.store, job_id, since, request, state.poll_interval, state.keepalive_s),
        media_type="text/event-stream",
        headers=_SSE_HEADERS,
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
