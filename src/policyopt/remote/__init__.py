"""The remote backend (extra ``policyopt[remote]``): job config, task app, clients, job server.

The package is four parts over shared wire types: :mod:`~policyopt.remote.server` (the job
server: routes, auth, middleware, policy, the runner), :mod:`~policyopt.remote.store` (the job
database), :mod:`~policyopt.remote.client` (:class:`PolicyOptimizationJob`) and
:mod:`~policyopt.remote.taskapp` (task-app servers and the client that calls them). The client
and the task-app code never import the server or the store; all sides share
:mod:`~policyopt.remote.config`, :mod:`~policyopt.remote.api_schema` and
:mod:`~policyopt.remote.protocol`.

Names load lazily so that ``import policyopt.remote`` stays light: fastapi, uvicorn and httpx
are imported only when the piece that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from policyopt.remote.client import JobResults, PolicyOptimizationJob
    from policyopt.remote.config import JobConfig, job_config_schema
    from policyopt.remote.taskapp.app import task_app
    from policyopt.remote.taskapp.client import AsyncTaskAppClient, TaskAppClient, TaskAppError

__all__ = [
    "AsyncTaskAppClient",
    "JobConfig",
    "JobResults",
    "PolicyOptimizationJob",
    "TaskAppClient",
    "TaskAppError",
    "job_config_schema",
    "task_app",
]

#: public name -> submodule of policyopt.remote that defines it
_LAZY = {
    "JobConfig": "config",
    "job_config_schema": "config",
    "task_app": "taskapp.app",
    "AsyncTaskAppClient": "taskapp.client",
    "TaskAppClient": "taskapp.client",
    "TaskAppError": "taskapp.client",
    "PolicyOptimizationJob": "client.jobs",
    "JobResults": "client.answers",
}


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` on first access."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'policyopt.remote' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"policyopt.remote.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
