"""The job server's routers, one per resource: :mod:`~.health`, :mod:`~.jobs` and
:mod:`~.events` (the last two under every API root), wired by :func:`include_routers`."""

from __future__ import annotations

from fastapi import FastAPI

from policyopt.remote.server.routers import events, health, jobs

__all__ = ["API_ROOTS", "include_routers"]

#: the job routes' roots: the current one first, then the older Synth spelling
API_ROOTS = ("/api/policy-optimization/online/jobs", "/api/prompt-learning/online/jobs")


def include_routers(app: FastAPI) -> None:
    """Mount every route: ``/health``, the jobs and their events under each API root, and the
    old cancel path."""
    app.include_router(health.router)
    for root in API_ROOTS:
        app.include_router(jobs.router, prefix=root)
        app.include_router(events.router, prefix=root)
    app.include_router(jobs.legacy_router)
