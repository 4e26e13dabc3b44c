"""Ready task apps: the built-in tasks served on the embedded local model.

``policyopt task-app policyopt.remote.builtin:antonyms`` serves the antonyms task, so a job server
(and its end-to-end tests) has a real task app to optimize against without writing one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from policyopt.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from fastapi import FastAPI

__all__ = ["antonyms", "builtin_task_app"]


def builtin_task_app(
    name: str,
    api_key: str | None = None,
    *,
    seed: int = 0,
    limit: int | None = None,
    n_parallel: int = 4,
    lm: Any = None,
) -> FastAPI:
    """A built-in task (see ``policyopt tasks``) as a task app on ``lm`` (default: a new
    :class:`~policyopt.LocalLM`, started on the first rollout and closed with the server).

    ``limit`` keeps the first N examples of each split (quick tests).
    """
    from policyopt.remote.taskapp.app import task_app
    from policyopt.tasks import get_task

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive int or None; got {limit!r}.")
    task = get_task(name, seed=seed)
    owned = lm is None
    if lm is None:
        from policyopt.lm import LocalLM

        lm = LocalLM(n_parallel=n_parallel)
    dataset = {
        split: list(task.split(split))[: limit or None] for split in ("train", "val", "test")
    }
    return task_app(
        task.program(lm),
        dataset,
        api_key=api_key,
        name=task.name,
        description=task.description,
        on_shutdown=lm.close if owned else None,
    )


def antonyms(api_key: str | None = None, **kwargs: Any) -> FastAPI:
    """The antonyms task on the local model (``policyopt task-app
    policyopt.remote.builtin:antonyms``); ``kwargs`` as for :func:`builtin_task_app`."""
    return builtin_task_app("antonyms", api_key, **kwargs)
