"""The job server's OpenAPI description: response bodies, error answers and request bodies.

The routes return plain dicts (built in one place, ``status_body``); these models describe
them for ``/openapi.json``, for clients, and for the schemathesis fuzz test, which checks every
answer against them. They allow extra fields so that a new field is not a breaking change.
The job body's schema is :func:`policyopt.remote.config.job_config_schema`, the one published as
``docs/job_config.schema.json``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict

__all__ = [
    "ErrorBody",
    "EventsBody",
    "HealthBody",
    "JobListBody",
    "ResultsBody",
    "StatusBody",
    "errors",
    "install_openapi",
]


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


def install_openapi(app: FastAPI, job_roots: tuple[str, ...]) -> None:
    """Make ``app.openapi()`` describe the JSON bodies the routes read themselves (the job
    config on submit, ``{"reason"}`` on cancel) and the bearer key."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        from policyopt.remote.config import job_config_schema

        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        components = schema.setdefault("components", {})
        defs = components.setdefault("schemas", {})
        job = job_config_schema()
        job.pop("$schema", None)
        for name, sub in job.pop("$defs", {}).items():
            defs[f"Job{name}"] = _rename_refs(sub)
        defs["JobConfig"] = _rename_refs(job)
        job_ref = {"$ref": "#/components/schemas/JobConfig"}
        body_schema = {
            "anyOf": [
                job_ref,
                {
                    "type": "object",
                    "properties": {"policy_optimization": job_ref},
                    "required": ["policy_optimization"],
                },
                {
                    "type": "object",
                    "properties": {
                        "algorithm": {"type": "string"},
                        "config_body": {"type": "object"},
                        "overrides": {"type": "object"},
                    },
                    "required": ["config_body"],
                },
            ]
        }
        cancel_schema = {
            "type": "object",
            "properties": {"reason": {"type": ["string", "null"], "maxLength": 1000}},
        }
        for path, item in schema.get("paths", {}).items():
            post = item.get("post")
            if post is None:
                continue
            body = body_schema if path in job_roots else cancel_schema
            post["requestBody"] = {
                "required": path in job_roots,
                "content": {"application/json": {"schema": body}},
            }
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path, item in schema.get("paths", {}).items():
            if path.startswith("/api/"):
                for operation in item.values():
                    operation["security"] = [{"bearer": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = build  # type: ignore[method-assign]


def _rename_refs(node: Any) -> Any:
    """A JSON schema with its ``#/$defs/X`` references pointed at the OpenAPI components."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
                out[key] = "#/components/schemas/Job" + value[len("#/$defs/") :]
            else:
                out[key] = _rename_refs(value)
        return out
    if isinstance(node, list):
        return [_rename_refs(v) for v in node]
    return node
