"""The job server: the FastAPI app (:func:`create_app`, :func:`serve`), its routers, auth and
middleware, the server policy, and the runner that executes jobs.

Names load lazily: a job's child process imports the runner's modules without FastAPI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from policyopt.remote.server.app import create_app, load_api_keys, run_app, serve

__all__ = ["create_app", "load_api_keys", "run_app", "serve"]


def __getattr__(name: str) -> Any:
    """Import :mod:`policyopt.remote.server.app` when one of its entry points is first used."""
    if name not in __all__:
        raise AttributeError(f"module 'policyopt.remote.server' has no attribute {name!r}")
    value = getattr(importlib.import_module("policyopt.remote.server.app"), name)
    globals()[name] = value
    return value
