"""``GET /health``: liveness and this replica's job counts, no key needed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from policyopt._version import __version__
from policyopt.remote.api_schema import HealthBody
from policyopt.remote.server.deps import State

__all__ = ["router"]

router = APIRouter()


@router.get("/health", responses={200: {"model": HealthBody}})
def health(state: State) -> dict[str, Any]:
    return {"status": "ok", "version": __version__, "jobs": state.runner.counts()}
