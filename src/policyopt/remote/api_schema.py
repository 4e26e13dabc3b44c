"""The job API's wire types, shared by the server and the client: job states, response bodies
and error answers (pydantic only: no FastAPI, no store).

The routes return plain dicts (built in one place, ``status_body``); these models describe them for
``/openapi.json`` (:mod:`policyopt.remote.server.openapi`), for clients, and for the schemathesis
fuzz test, which checks every answer against them. They allow extra fields so that a new field is
not a breaking change. The job body's schema is :func:`policyopt.remote.config.job_config_schema`,
the one published as ``docs/job_config.schema.json``.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = [
    "TERMINAL_EVENTS",
    "TERMINAL_STATES",
    "ErrorBody",
    "EventsBody",
    "HealthBody",
    "JobListBody",
    "JobState",
    "ResultsBody",
    "StatusBody",
    "errors",
]


class JobState(str, Enum):
    """The states of a job; succeeded, failed and cancelled are terminal."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True when the job will not change any more."""
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
#: the event that ends a job's stream, by terminal state
TERMINAL_EVENTS = {
    JobState.SUCCEEDED: "job.succeeded",
    JobState.FAILED: "job.failed",
    JobState.CANCELLED: "job.cancelled",
}


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorBody(_Open):
    """Every error: a sentence saying what was wrong."""

    detail: str


class HealthBody(_Open):
    status: str
    version: str
    jobs: dict[str, int]


class Progress(_Open):
    rollouts_used: int
    max_rollouts: int | None = None


class StatusBody(_Open):
    """A job's status (``GET JOBS/{id}``, the answer to a submit)."""

    job_id: str
    id: str
    status: str
    algorithm: str
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    progress: Progress
    best_score: float | None
    best_prompt: str | dict[str, str] | list[dict[str, str]] | None
    error: str | None
    cancel_requested: bool
    last_seq: int


class CancelBody(StatusBody):
    message: str


class JobListBody(_Open):
    jobs: list[StatusBody]


class ResultsBody(StatusBody):
    final: bool
    stop_reason: str | None
    top_prompts: list[dict[str, Any]]
    history: list[dict[str, Any]]
    test: dict[str, Any] | None
    usage: dict[str, Any] | None


class EventBody(_Open):
    job_id: str
    seq: int
    type: str
    ts: float
    level: str
    message: str
    data: dict[str, Any]


class EventsBody(_Open):
    job_id: str
    status: str
    events: list[EventBody]
    next_seq: int


_WHY = {
    400: "malformed JSON, Content-Length or Last-Event-ID",
    401: "missing, malformed or unknown API key",
    404: "no such job for this key (the same answer for another key's job)",
    413: "the body is over the server's limit",
    415: "the body is not JSON",
    422: "invalid input: a config error, a policy refusal or an input over a limit",
    429: "a per-key quota is reached",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses=`` for these error statuses, each an :class:`ErrorBody`."""
    return {code: {"model": ErrorBody, "description": _WHY[code]} for code in codes}
