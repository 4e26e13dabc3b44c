"""What the job server's routes depend on: the server's state, the store and the caller's owner
id (authentication), as FastAPI dependencies; and the one lookup of a caller's own job.

The dependencies are ``async`` on purpose: they do no I/O, and a plain ``def`` dependency would
cost every request a hop to FastAPI's thread pool.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from policyopt.remote.server.policy import ServerPolicy
from policyopt.remote.server.runner import JobRunner
from policyopt.remote.server.vault import ServerSecret
from policyopt.remote.store import JobRecord, JobStore
from policyopt.remote.taskapp.outbound import OutboundPolicy

__all__ = [
    "Owner",
    "ServerState",
    "State",
    "Store",
    "authenticate",
    "job_store",
    "own_job",
    "owner",
    "server_state",
]

#: what a job id may look like (anything else is answered like a missing job, unread)
_JOB_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")


@dataclass(frozen=True)
class ServerState:
    """What the routes share, built once by :func:`~policyopt.remote.server.app.create_app` and
    kept on ``app.state.server``."""

    store: JobStore
    runner: JobRunner
    secret: ServerSecret
    policy: ServerPolicy
    outbound: OutboundPolicy
    owner_ids: tuple[str, ...]
    poll_interval: float
    keepalive_s: float


async def server_state(request: Request) -> ServerState:
    """The server's state (a dependency)."""
    state: ServerState = request.app.state.server
    return state


async def job_store(request: Request) -> JobStore:
    """The server's job store (a dependency)."""
    state: ServerState = request.app.state.server
    return state.store


async def owner(request: Request) -> str:
    """The owner id of the request's API key (a dependency); 401 without a valid one."""
    return authenticate(request.app.state.server, request.headers.get("authorization"))


#: a route parameter: the server's state
State = Annotated[ServerState, Depends(server_state)]
#: a route parameter: the server's job store
Store = Annotated[JobStore, Depends(job_store)]
#: a route parameter: the caller's owner id (401 without a valid key)
Owner = Annotated[str, Depends(owner)]


def authenticate(state: ServerState, header: str | None) -> str:
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
    digest = state.secret.owner_id(token)
    match = None
    for known in state.owner_ids:  # compare every one, in constant time
        if hmac.compare_digest(digest, known):
            match = known
    if match is None:
        raise HTTPException(
            401,
            "Invalid API key.",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return match


def own_job(store: JobStore, job_id: str, who: str, full: bool = True) -> JobRecord:
    """The caller's job; 404 for a missing job and for someone else's alike."""
    job = store.get_job(job_id, owner=who, full=full) if _JOB_ID.match(job_id) else None
    if job is None:  # the same answer for a missing job and for someone else's
        raise HTTPException(404, "No such job for this API key.")
    return job
