"""The task-app client: how a job server (or anyone) runs rollouts against a task app over HTTP.

httpx underneath, thread-safe (the rollout engine calls it from its thread pool), with a bound
on concurrent requests, a timeout per request and retries with exponential backoff on connection
errors, timeouts, 429 and 5xx. A 4xx other than 429 is not retried. A 500 whose body says the
evaluation failed (``error.type == "rollout_failed"``) is a failed rollout, not retried. After the
last try a :class:`TaskAppError` names the URL and the cause, so a task app that is down makes a
job fail in bounded time (at most about ``(retries + 1) * timeout`` plus the backoff).

With an :class:`~policyopt.remote.outbound.OutboundPolicy` (the job server always gives one),
every new connection is resolved and checked against it first, and a refused one fails at once.
Redirects are not followed (a 3xx is an error), answers are read up to ``max_response_bytes``,
and an error names the status and the task app's own JSON ``detail`` (bounded), never its raw
body: the body of whatever answered could be an internal service's.
"""

from __future__ import annotations

import json as _json
import random
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from policyopt.errors import ConfigError, EvaluationError, describe
from policyopt.remote.protocol import (
    ROLLOUT_FAILED,
    RolloutFailure,
    RolloutRequest,
    RolloutResponse,
    TaskInfo,
)
from policyopt.types import Program, Score

if TYPE_CHECKING:  # pragma: no cover
    from policyopt.remote.outbound import OutboundPolicy

__all__ = ["RETRY_STATUS", "TaskAppClient", "TaskAppError"]

#: HTTP statuses worth another try (the task app or a proxy in front of it is busy or restarting)
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_MAX_RETRY_AFTER_S = 30.0
#: longest error detail from a task app shown to the user
MAX_DETAIL_CHARS = 200


class TaskAppError(EvaluationError):
    """The task app answered an error, or could not be reached after the retries.

    ``url`` is the request's URL, ``status`` the HTTP status (None when unreachable), and
    ``rollout_failed`` is True when the task app reported that the evaluation itself failed.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str = "",
        status: int | None = None,
        rollout_failed: bool = False,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.rollout_failed = rollout_failed


class TaskAppClient:
    """Calls one task app: ``health()``, ``task_info()``, ``rollout()``; ``program()`` wraps it
    as a :class:`~policyopt.Program` for the optimizers."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        max_concurrency: int = 8,
        backoff: float = 0.25,
        max_backoff: float = 8.0,
        run_id: str | None = None,
        outbound: OutboundPolicy | None = None,
        max_response_bytes: int = 16 << 20,
    ) -> None:
        import httpx

        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"The task app URL must start with http:// or https://; got {describe(url)}."
            )
        for name, value, low in (
            ("timeout", timeout, 0.0),
            ("backoff", backoff, 0.0),
            ("max_backoff", max_backoff, 0.0),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
                raise ConfigError(f"TaskAppClient {name} must be a number >= {low}; got {value!r}.")
        if timeout <= 0:
            raise ConfigError(f"TaskAppClient timeout must be > 0 seconds; got {timeout!r}.")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigError(f"TaskAppClient retries must be an int >= 0; got {retries!r}.")
        if (
            isinstance(max_concurrency, bool)
            or not isinstance(max_concurrency, int)
            or max_concurrency < 1
        ):
            raise ConfigError(
                f"TaskAppClient max_concurrency must be an int >= 1; got {max_concurrency!r}."
            )
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self.retries = retries
        self.max_concurrency = max_concurrency
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.run_id = run_id
        self.outbound = outbound
        self.max_response_bytes = max_response_bytes
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
            limits=httpx.Limits(
                max_connections=max_concurrency, max_keepalive_connections=max_concurrency
            ),
            follow_redirects=False,
            trust_env=False,
            transport=None
            if outbound is None
            else outbound.transport(max_connections=max_concurrency),
        )
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._rng = random.Random()
        self._closed = False

    # ------------------------------------------------------------------------ endpoints
    def health(self) -> dict[str, Any]:
        """``GET /health``; raises :class:`TaskAppError` when the app is down or refuses the key."""
        data = self._request("GET", "/health")
        if not isinstance(data, dict):
            raise TaskAppError(
                f"{self.url}/health answered {describe(data)}, not a JSON object.",
                url=f"{self.url}/health",
            )
        return data

    def task_info(self) -> TaskInfo:
        """``GET /task_info``: the task's name and the example ids of each split."""
        data = self._request("GET", "/task_info")
        try:
            return TaskInfo.model_validate(data)
        except ValidationError as exc:
            raise TaskAppError(
                f"{self.url}/task_info answered something that is not a task info: {exc}",
                url=f"{self.url}/task_info",
            ) from None

    def rollout(
        self,
        example_id: str,
        prompt: str | Mapping[str, str] | Sequence[Mapping[str, str]],
        policy: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
    ) -> Score:
        """``POST /rollout``: the score of ``prompt`` on one example, as a :class:`Score`."""
        body = RolloutRequest(
            example_id=str(example_id),
            prompt=prompt  # type: ignore[arg-type]
            if isinstance(prompt, str)
            else dict(prompt)
            if isinstance(prompt, Mapping)
            else [dict(m) for m in prompt],
            policy=dict(policy or {}),
            run_id=run_id if run_id is not None else self.run_id,
        )
        data = self._request("POST", "/rollout", json=body.model_dump(mode="json"))
        try:
            answer = RolloutResponse.model_validate(data)
        except ValidationError as exc:
            raise TaskAppError(
                f"{self.url}/rollout answered an invalid rollout for example {example_id!r}: "
                f"{_first_error(exc)}",
                url=f"{self.url}/rollout",
            ) from None
        if answer.example_id != body.example_id:
            raise TaskAppError(
                f"{self.url}/rollout answered for example {answer.example_id!r} when asked "
                f"for {body.example_id!r}.",
                url=f"{self.url}/rollout",
            )
        return Score(
            answer.score,
            feedback=answer.feedback,
            output=answer.output,
            objectives=answer.objectives,
        )

    def program(self, initial_prompt: str, policy: Mapping[str, Any] | None = None) -> Program:
        """A Program whose ``evaluate(prompt, example)`` is a rollout of ``example["id"]``."""
        return Program(initial_prompt, RemoteEvaluate(self, policy))

    # -------------------------------------------------------------------------- plumbing
    def _request(self, method: str, path: str, json: Any = None) -> Any:
        """One call with bounded concurrency and retries; the decoded JSON answer."""
        import httpx

        if self._closed:
            raise TaskAppError("The TaskAppClient is closed.", url=self.url + path)
        url = self.url + path
        last = ""
        for attempt in range(self.retries + 1):
            wait = self._delay(attempt)
            try:
                with self._slots:
                    status, headers, body = self._send(method, path, json)
            except _TooLarge as exc:
                raise TaskAppError(
                    f"{method} {url} answered more than {self.max_response_bytes} bytes.",
                    url=url,
                    status=exc.status,
                ) from None
            except httpx.TransportError as exc:  # connect/read errors and timeouts
                if _refused(exc):
                    raise TaskAppError(f"{method} {url}: {exc}", url=url) from None
                last = f"{type(exc).__name__}: {exc or 'no answer'}"
            else:
                response = _Answer(status, headers, body)
                if 300 <= status < 400:
                    raise TaskAppError(
                        f"{method} {url} answered a redirect ({status}); the job server does "
                        "not follow redirects: give the task app's final URL.",
                        url=url,
                        status=status,
                    )
                if status < 400:
                    try:
                        return response.json()
                    except ValueError:
                        raise TaskAppError(
                            f"{method} {url} answered {status} with a body that is not JSON.",
                            url=url,
                            status=status,
                        ) from None
                failure = _rollout_failure(response)
                if failure is not None:
                    raise TaskAppError(
                        f"The task app at {url} reports that the rollout failed: "
                        f"{failure.error.exception or 'error'}: "
                        f"{failure.error.message[:MAX_DETAIL_CHARS]}",
                        url=url,
                        status=status,
                        rollout_failed=True,
                    )
                detail = _detail(response)
                if status not in RETRY_STATUS:
                    hint = " (check the task app's API key)" if status in (401, 403) else ""
                    raise TaskAppError(
                        f"{method} {url} answered {status}: {detail}{hint}",
                        url=url,
                        status=status,
                    )
                last = f"HTTP {status}: {detail}"
                wait = max(wait, _retry_after(response))
            if attempt < self.retries:
                time.sleep(wait)
        raise TaskAppError(
            f"{method} {url} failed after {self.retries + 1} attempt(s): {last}. Is the task "
            "app running and reachable from here?",
            url=url,
        )

    def _send(self, method: str, path: str, json: Any) -> tuple[int, Any, bytes]:
        """One HTTP exchange: status, headers and the body read up to the size limit."""
        with self._http.stream(method, path, json=json) as response:
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > self.max_response_bytes:
                    raise _TooLarge(response.status_code)
                chunks.append(chunk)
            return response.status_code, response.headers, b"".join(chunks)

    def _delay(self, attempt: int) -> float:
        """Exponential backoff with jitter, capped."""
        base = min(self.max_backoff, self.backoff * (2**attempt))
        return base * (0.5 + self._rng.random() / 2)

    def close(self) -> None:
        """Close the connection pool; later calls raise :class:`TaskAppError`."""
        self._closed = True
        self._http.close()

    def __enter__(self) -> TaskAppClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TaskAppClient({self.url!r})"


class RemoteEvaluate:
    """``evaluate(prompt, example)`` as a task-app rollout of the example's id."""

    def __init__(self, client: TaskAppClient, policy: Mapping[str, Any] | None = None) -> None:
        self.client = client
        self.policy = dict(policy or {})

    def __call__(self, prompt: Any, example: Any) -> Score:
        if isinstance(example, Mapping):
            if "id" not in example:
                raise ConfigError(
                    "Remote rollouts need examples with an 'id' (the task app's example id); "
                    f"got {describe(example)}."
                )
            ident = example["id"]
        else:
            ident = example
        return self.client.rollout(str(ident), prompt, self.policy)


def _rollout_failure(response: Any) -> RolloutFailure | None:
    """The task app's "evaluation failed" answer, if this 500 is one."""
    if response.status_code != 500:
        return None
    try:
        failure = RolloutFailure.model_validate(response.json())
    except ValueError:  # not JSON, or not a failure body (pydantic errors are ValueErrors)
        return None
    return failure if failure.error.type == ROLLOUT_FAILED else None


def _detail(response: Any) -> str:
    """The task app's own JSON ``detail``, bounded; never the raw body (which could be an
    internal service's answer to a forged request)."""
    try:
        data = response.json()
    except ValueError:
        return f"a body that is not JSON ({len(response.content)} bytes, not shown)"
    detail = data.get("detail") if isinstance(data, dict) else None
    if detail is None:
        return "no 'detail' in the JSON answer"
    text = detail if isinstance(detail, str) else _json.dumps(detail, default=str)
    return text[:MAX_DETAIL_CHARS] + ("..." if len(text) > MAX_DETAIL_CHARS else "")


class _TooLarge(Exception):
    """An answer over ``max_response_bytes``."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Answer:
    """A read answer: what the error handling needs of a response."""

    def __init__(self, status: int, headers: Any, content: bytes) -> None:
        self.status_code = status
        self.headers = headers
        self.content = content

    def json(self) -> Any:
        return _json.loads(self.content)


def _refused(exc: BaseException) -> bool:
    """True when the outbound policy refused the connection (no retry can help)."""
    from policyopt.remote.outbound import OutboundRefused

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OutboundRefused):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _retry_after(response: Any) -> float:
    value = response.headers.get("retry-after")
    try:
        return min(_MAX_RETRY_AFTER_S, max(0.0, float(value))) if value else 0.0
    except ValueError:
        return 0.0


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "(body)"
    return f"{where}: {error['msg']}"
