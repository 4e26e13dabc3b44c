"""The remote backend (extra ``policyopt[remote]``): job config, task app, clients, job server.

Names load lazily so that ``import policyopt.remote`` stays light: fastapi, uvicorn and httpx
are imported only when the piece that needs them is used.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from policyopt.remote.client import JobResults, PolicyOptimizationJob
    from policyopt.remote.config import JobConfig, job_config_schema
    from policyopt.remote.task_app import task_app
    from policyopt.remote.taskapp_client import AsyncTaskAppClient, TaskAppClient, TaskAppError

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
    "task_app": "task_app",
    "AsyncTaskAppClient": "taskapp_client",
    "TaskAppClient": "taskapp_client",
    "TaskAppError": "taskapp_client",
    "PolicyOptimizationJob": "client",
    "JobResults": "client",
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


class _Package(types.ModuleType):
    """Keeps ``policyopt.remote.task_app`` the function even once the submodule of the same
    name is imported (the import system would otherwise set the attribute to the module).

    Import the module's other names with ``from policyopt.remote.task_app import ...``.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "task_app" and isinstance(value, types.ModuleType):
            from policyopt.remote.task_app import task_app as function

            value = function
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
