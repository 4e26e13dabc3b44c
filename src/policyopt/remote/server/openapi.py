"""The job server's ``/openapi.json``: the route models plus the JSON bodies the routes read
themselves (the job config on submit, ``{"reason"}`` on cancel) and the bearer key."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

__all__ = ["install_openapi"]


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
