"""The task-app clients: how a job server (or anyone) runs rollouts against a task app over HTTP.

:class:`TaskAppClient` is sync and thread-safe (the rollout engine calls it from its thread pool);
:class:`AsyncTaskAppClient` is its ``httpx.AsyncClient`` twin, whose ``program()`` evaluate is a
coroutine, so the engine keeps ``n_jobs`` rollouts in flight on one event loop instead of one
thread each (the job server uses it). Both share one implementation of everything but the send
and the sleep (:class:`_Call`, :class:`_TaskAppBase`), and so behave alike: a bound on
concurrent requests, a timeout per request and retries with exponential backoff on connection
errors, timeouts, 429 and 5xx. A 4xx other than 429 is not retried. A 500 whose body says the
evaluation failed (``error.type == "rollout_failed"``) is a failed rollout, not retried. After the
last try a :class:`TaskAppError` names the URL and the cause, so a task app that is down makes a
job fail in bounded time (at most about ``(retries + 1) * timeout`` plus the backoff).

With an :class:`~policyopt.remote.taskapp.outbound.OutboundPolicy` (the job server always gives
one), every new connection is resolved and checked against it first, and a refused one fails at
once. Redirects are not followed (a 3xx is an error), answers are read up to ``max_response_bytes``,
and an error names the status and the task app's own JSON ``detail`` (bounded), never its raw body:
the body of whatever answered could be an internal service's.

The shared part (:class:`_Call`, :class:`_TaskAppBase`, limits and answers) is in
:mod:`policyopt.remote.taskapp.base`; this module re-exports ``TaskAppError`` and
``RETRY_STATUS``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from typing import Any

from policyopt.errors import ConfigError, describe
from policyopt.remote.protocol import TaskInfo
from policyopt.remote.taskapp.base import (
    _RETRY,
    RETRY_STATUS,
    Prompt,
    TaskAppError,
    _Answer,
    _Body,
    _TaskAppBase,
)
from policyopt.types import Program, Score

__all__ = ["RETRY_STATUS", "AsyncTaskAppClient", "TaskAppClient", "TaskAppError"]


class TaskAppClient(_TaskAppBase):
    """Calls one task app: ``health()``, ``task_info()``, ``rollout()``; ``program()`` wraps it
    as a :class:`~policyopt.Program` for the optimizers (sync, thread-safe)."""

    def _open(self) -> None:
        import httpx

        self._lanes = self._make_lanes(httpx.Client, lambda policy: policy.transport)
        self._slots = threading.BoundedSemaphore(self.max_concurrency)

    # ------------------------------------------------------------------------ endpoints
    def health(self) -> dict[str, Any]:
        """``GET /health``; raises :class:`TaskAppError` when the app is down or refuses the key."""
        return self._health_answer(self._request("GET", "/health"))

    def task_info(self) -> TaskInfo:
        """``GET /task_info``: the task's name and the example ids of each split."""
        return self._task_info_answer(self._request("GET", "/task_info"))

    def rollout(
        self,
        example_id: str,
        prompt: Prompt,
        policy: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
    ) -> Score:
        """``POST /rollout``: the score of ``prompt`` on one example, as a :class:`Score`."""
        body = self._rollout_request(example_id, prompt, policy, run_id)
        data = self._request("POST", "/rollout", json=body.model_dump(mode="json"))
        return self._rollout_answer(body, data)

    def program(self, initial_prompt: Any, policy: Mapping[str, Any] | None = None) -> Program:
        """A Program whose ``evaluate(prompt, example)`` is a rollout of ``example["id"]``."""
        return Program(initial_prompt, RemoteEvaluate(self, policy))

    # -------------------------------------------------------------------------- plumbing
    def _request(self, method: str, path: str, json: Any = None) -> Any:
        """One call with bounded concurrency and retries; the decoded JSON answer."""
        call = self._call(method, path)
        for attempt in call.attempts():
            try:
                with self._slots:
                    answer = self._send(method, path, json)
            except Exception as exc:
                call.failed(exc)
            else:
                if (data := call.read(answer)) is not _RETRY:
                    return data
            if (wait := call.pause(attempt)) is not None:
                time.sleep(wait)
        raise call.give_up()

    def _send(self, method: str, path: str, json: Any) -> _Answer:
        """One HTTP exchange: status, headers and the body read up to the size limit."""
        with self._lanes.pick() as http, http.stream(method, path, json=json) as response:
            body = _Body(response, self.max_response_bytes)
            for chunk in response.iter_bytes():
                body.add(chunk)
            return body.answer()

    def close(self) -> None:
        """Close the connection pool; later calls raise :class:`TaskAppError`."""
        self._closed = True
        for http in self._lanes.clients:
            http.close()

    def __enter__(self) -> TaskAppClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncTaskAppClient(_TaskAppBase):
    """The async twin of :class:`TaskAppClient` (same arguments, answers and errors): ``await
    health() / task_info() / rollout()``; ``program()``'s evaluate is a coroutine.

    Use it on one event loop (httpx's connections belong to the loop that opened them): the
    engine's, which is policyopt's shared loop, so :meth:`close` from sync code closes it there.
    """

    def _open(self) -> None:
        import httpx

        self._lanes = self._make_lanes(httpx.AsyncClient, lambda policy: policy.async_transport)
        self._slots = asyncio.Semaphore(self.max_concurrency)

    # ------------------------------------------------------------------------ endpoints
    async def health(self) -> dict[str, Any]:
        """``GET /health``; raises :class:`TaskAppError` when the app is down or refuses the key."""
        return self._health_answer(await self._request("GET", "/health"))

    async def task_info(self) -> TaskInfo:
        """``GET /task_info``: the task's name and the example ids of each split."""
        return self._task_info_answer(await self._request("GET", "/task_info"))

    async def rollout(
        self,
        example_id: str,
        prompt: Prompt,
        policy: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
    ) -> Score:
        """``POST /rollout``: the score of ``prompt`` on one example, as a :class:`Score`."""
        body = self._rollout_request(example_id, prompt, policy, run_id)
        data = await self._request("POST", "/rollout", json=body.model_dump(mode="json"))
        return self._rollout_answer(body, data)

    def program(self, initial_prompt: Any, policy: Mapping[str, Any] | None = None) -> Program:
        """A Program whose async ``evaluate(prompt, example)`` is a rollout of ``example["id"]``
        (the engine runs it as a coroutine, ``n_jobs`` in flight on one loop)."""
        return Program(initial_prompt, AsyncRemoteEvaluate(self, policy))

    # -------------------------------------------------------------------------- plumbing
    async def _request(self, method: str, path: str, json: Any = None) -> Any:
        """One call with bounded concurrency and retries; the decoded JSON answer."""
        call = self._call(method, path)
        for attempt in call.attempts():
            try:
                async with self._slots:
                    answer = await self._send(method, path, json)
            except Exception as exc:
                call.failed(exc)
            else:
                if (data := call.read(answer)) is not _RETRY:
                    return data
            if (wait := call.pause(attempt)) is not None:
                await asyncio.sleep(wait)
        raise call.give_up()

    async def _send(self, method: str, path: str, json: Any) -> _Answer:
        """One HTTP exchange: status, headers and the body read up to the size limit."""
        with self._lanes.pick() as http:
            async with http.stream(method, path, json=json) as response:
                body = _Body(response, self.max_response_bytes)
                async for chunk in response.aiter_bytes():
                    body.add(chunk)
                return body.answer()

    async def aclose(self) -> None:
        """Close the connection pool; later calls raise :class:`TaskAppError`."""
        self._closed = True
        for http in self._lanes.clients:
            await http.aclose()

    def close(self) -> None:
        """:meth:`aclose` from sync code (any thread but the loop's): runs on policyopt's loop."""
        from policyopt.rollout.aio import await_blocking

        self._closed = True
        await_blocking(self.aclose())

    async def __aenter__(self) -> AsyncTaskAppClient:
        """``async with AsyncTaskAppClient(...) as client:`` closes it at the end."""
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _example_id(example: Any) -> str:
    """The task app's id of an example: its ``"id"``, or the example itself (a bare id)."""
    if isinstance(example, Mapping):
        if "id" not in example:
            raise ConfigError(
                "Remote rollouts need examples with an 'id' (the task app's example id); "
                f"got {describe(example)}."
            )
        return str(example["id"])
    return str(example)


class RemoteEvaluate:
    """``evaluate(prompt, example)`` as a task-app rollout of the example's id."""

    def __init__(self, client: TaskAppClient, policy: Mapping[str, Any] | None = None) -> None:
        self.client = client
        self.policy = dict(policy or {})

    def __call__(self, prompt: Any, example: Any) -> Score:
        return self.client.rollout(_example_id(example), prompt, self.policy)


class AsyncRemoteEvaluate:
    """``await evaluate(prompt, example)`` as a task-app rollout (the engine sees it as async)."""

    def __init__(self, client: AsyncTaskAppClient, policy: Mapping[str, Any] | None = None) -> None:
        self.client = client
        self.policy = dict(policy or {})

    async def __call__(self, prompt: Any, example: Any) -> Score:
        return await self.client.rollout(_example_id(example), prompt, self.policy)
