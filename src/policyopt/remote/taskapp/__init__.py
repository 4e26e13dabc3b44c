"""Task apps: the server side (:func:`task_app`, :func:`load_app`, :func:`current_policy`), the
client that calls them (:class:`TaskAppClient`, :class:`AsyncTaskAppClient`) and the outbound
policy that guards those calls (imports neither the job server nor the store).

Names load lazily: the client side never imports FastAPI, the server side never imports httpx.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from policyopt.remote.taskapp.app import current_policy, current_rollout, load_app, task_app
    from policyopt.remote.taskapp.client import AsyncTaskAppClient, TaskAppClient, TaskAppError

#: public name -> submodule of policyopt.remote.taskapp that defines it
_LAZY = {
    "current_policy": "app",
    "current_rollout": "app",
    "load_app": "app",
    "task_app": "app",
    "AsyncTaskAppClient": "client",
    "TaskAppClient": "client",
    "TaskAppError": "client",
}

__all__ = [
    "AsyncTaskAppClient",
    "TaskAppClient",
    "TaskAppError",
    "current_policy",
    "current_rollout",
    "load_app",
    "task_app",
]


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` on first access."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'policyopt.remote.taskapp' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"policyopt.remote.taskapp.{module}"), name)
    globals()[name] = value
    return value
