"""What the two task-app clients share: limits, retries, lanes of connections, and answers.

:class:`_TaskAppBase` (configuration, lanes, request and answer shapes) and :class:`_Call` (one
request's tries: what is retried, how long to wait, when to give up) hold everything of
:class:`~policyopt.remote.taskapp.client.TaskAppClient` and its async twin but the send and the
sleep; see :mod:`policyopt.remote.taskapp.client` (which re-exports the public names) for the
behaviour.
"""

from __future__ import annotations

import contextlib
import json as _json
import random
import ssl
import threading
from collections.abc import Iterator, Mapping, Sequence
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
from policyopt.types import Score

if TYPE_CHECKING:  # pragma: no cover
    from policyopt.remote.taskapp.outbound import OutboundPolicy

__all__ = ["LANE_CONNECTIONS", "MAX_DETAIL_CHARS", "RETRY_STATUS", "Prompt", "TaskAppError"]


#: HTTP statuses worth another try (the task app or a proxy in front of it is busy or restarting)
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_MAX_RETRY_AFTER_S = 30.0
#: longest error detail from a task app shown to the user
MAX_DETAIL_CHARS = 200
#: connections per httpx pool ("lane"). httpcore 1.0's pool does work proportional to its
#: connections times its queued requests on every request and release, and hands one idle
#: connection to several waiters that then retry: at 100 in flight in one pool most of the CPU
#: went there, and a task app saw 11-28 requests at once instead of 100. One connection a pool,
#: and a request always on an idle one (the slots bound requests to the pools), avoids both.
LANE_CONNECTIONS = 1


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


Prompt = str | Mapping[str, str] | Sequence[Mapping[str, str]]

#: what :meth:`_Call.read` answers when the attempt should be retried
_RETRY: Any = object()


class _TaskAppBase:
    """What the sync and async clients share: settings, request bodies, the reading of answers
    and the retry plan; subclasses add only the transport (send, sleep, close)."""

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
        kind = type(self).__name__
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
                raise ConfigError(f"{kind} {name} must be a number >= {low}; got {value!r}.")
        if timeout <= 0:
            raise ConfigError(f"{kind} timeout must be > 0 seconds; got {timeout!r}.")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigError(f"{kind} retries must be an int >= 0; got {retries!r}.")
        if (
            isinstance(max_concurrency, bool)
            or not isinstance(max_concurrency, int)
            or max_concurrency < 1
        ):
            raise ConfigError(
                f"{kind} max_concurrency must be an int >= 1; got {max_concurrency!r}."
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
        self._headers = {"Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._rng = random.Random()
        self._closed = False
        self._ssl: ssl.SSLContext | None = None
        self._open()

    def _open(self) -> None:
        """Create the HTTP clients and the concurrency slots (the sync or the async kind)."""
        raise NotImplementedError

    def _lane_sizes(self) -> list[int]:
        """``max_concurrency`` connections split into lanes of at most :data:`LANE_CONNECTIONS`."""
        n = -(-self.max_concurrency // LANE_CONNECTIONS)
        return [len(range(i, self.max_concurrency, n)) for i in range(n)]

    def _make_lanes(self, client_class: Any, make_transport: Any) -> _Lanes:
        """One ``client_class`` per lane; through the outbound policy's ``make_transport``
        (``transport`` or ``async_transport``) when there is a policy."""
        return _Lanes(
            [
                client_class(
                    **self._client_options(size),
                    transport=None
                    if self.outbound is None
                    else make_transport(self.outbound)(max_connections=size, ssl_context=self._ssl),
                )
                for size in self._lane_sizes()
            ]
        )

    def _client_options(self, connections: int) -> dict[str, Any]:
        """httpx client settings both clients use (no redirects, no proxy from the env, one
        TLS context shared by every lane: building one costs ~20 ms)."""
        import httpx

        if self._ssl is None:
            self._ssl = httpx.create_ssl_context(trust_env=False)
        return {
            "verify": self._ssl,
            "base_url": self.url,
            "headers": self._headers,
            "timeout": httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
            "limits": httpx.Limits(
                max_connections=connections, max_keepalive_connections=connections
            ),
            "follow_redirects": False,
            "trust_env": False,
        }

    def _call(self, method: str, path: str) -> _Call:
        """The retry plan of one request (refused at once when the client is closed)."""
        if self._closed:
            raise TaskAppError(f"The {type(self).__name__} is closed.", url=self.url + path)
        return _Call(self, method, path)

    def _delay(self, attempt: int) -> float:
        """Exponential backoff with jitter, capped."""
        base = min(self.max_backoff, self.backoff * (2**attempt))
        return base * (0.5 + self._rng.random() / 2)

    # ------------------------------------------------- bodies and answers (no I/O)
    def _health_answer(self, data: Any) -> dict[str, Any]:
        """``/health``'s answer, checked to be a JSON object."""
        if not isinstance(data, dict):
            raise TaskAppError(
                f"{self.url}/health answered {describe(data)}, not a JSON object.",
                url=f"{self.url}/health",
            )
        return data

    def _task_info_answer(self, data: Any) -> TaskInfo:
        """``/task_info``'s answer as a :class:`TaskInfo`."""
        try:
            return TaskInfo.model_validate(data)
        except ValidationError as exc:
            raise TaskAppError(
                f"{self.url}/task_info answered something that is not a task info: {exc}",
                url=f"{self.url}/task_info",
            ) from None

    def _rollout_request(
        self,
        example_id: str,
        prompt: Prompt,
        policy: Mapping[str, Any] | None,
        run_id: str | None,
    ) -> RolloutRequest:
        """The ``/rollout`` body for one example (a prompt, named components or messages)."""
        return RolloutRequest(
            example_id=str(example_id),
            prompt=prompt  # type: ignore[arg-type]
            if isinstance(prompt, str)
            else dict(prompt)
            if isinstance(prompt, Mapping)
            else [dict(m) for m in prompt],
            policy=dict(policy or {}),
            run_id=run_id if run_id is not None else self.run_id,
        )

    def _rollout_answer(self, body: RolloutRequest, data: Any) -> Score:
        """``/rollout``'s answer as a :class:`Score`, checked to be for the example asked."""
        try:
            answer = RolloutResponse.model_validate(data)
        except ValidationError as exc:
            raise TaskAppError(
                f"{self.url}/rollout answered an invalid rollout for example "
                f"{body.example_id!r}: {_first_error(exc)}",
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

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


class _Call:
    """One request's retry plan and the reading of each answer, shared by both clients: which
    errors end the call, which are retried and after how long, and the final error."""

    def __init__(self, client: _TaskAppBase, method: str, path: str) -> None:
        self.client = client
        self.method = method
        self.url = client.url + path
        self.last = ""
        self.retry_after = 0.0

    def attempts(self) -> range:
        """The attempt numbers: the first try and each retry."""
        return range(self.client.retries + 1)

    def failed(self, exc: BaseException) -> None:
        """A send that raised: re-raise what no retry can help, else note it for a retry."""
        import httpx

        if isinstance(exc, _TooLarge):
            raise TaskAppError(
                f"{self.method} {self.url} answered more than "
                f"{self.client.max_response_bytes} bytes.",
                url=self.url,
                status=exc.status,
            ) from None
        if not isinstance(exc, httpx.TransportError):  # connect/read errors and timeouts
            raise exc
        if _refused(exc):
            raise TaskAppError(f"{self.method} {self.url}: {exc}", url=self.url) from None
        self.last = f"{type(exc).__name__}: {exc or 'no answer'}"

    def read(self, response: _Answer) -> Any:
        """The decoded JSON of a good answer, :data:`_RETRY` for a busy one, else raises."""
        method, url, status = self.method, self.url, response.status_code
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
                f"{method} {url} answered {status}: {detail}{hint}", url=url, status=status
            )
        self.last = f"HTTP {status}: {detail}"
        self.retry_after = _retry_after(response)
        return _RETRY

    def pause(self, attempt: int) -> float | None:
        """Seconds to wait before the next attempt (backoff or Retry-After); None after the last."""
        if attempt >= self.client.retries:
            return None
        wait = max(self.client._delay(attempt), self.retry_after)
        self.retry_after = 0.0
        return wait

    def give_up(self) -> TaskAppError:
        """The error after the last attempt, naming the URL and the last cause."""
        return TaskAppError(
            f"{self.method} {self.url} failed after {self.client.retries + 1} attempt(s): "
            f"{self.last}. Is the task app running and reachable from here?",
            url=self.url,
        )


class _Lanes:
    """The clients' HTTP pools; each request goes to the least busy one (thread-safe, and never
    held across an await)."""

    def __init__(self, clients: list[Any]) -> None:
        self.clients = clients
        self.busy = [0] * len(clients)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def pick(self) -> Iterator[Any]:
        """The least busy pool, counted busy until the block ends."""
        with self._lock:
            lane = min(range(len(self.busy)), key=self.busy.__getitem__)
            self.busy[lane] += 1
        try:
            yield self.clients[lane]
        finally:
            with self._lock:
                self.busy[lane] -= 1


class _Body:
    """A response body read up to ``limit`` bytes (the sync and async reads feed it chunks)."""

    def __init__(self, response: Any, limit: int) -> None:
        self.status = response.status_code
        self.headers = response.headers
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, chunk: bytes) -> None:
        """Take one chunk; raises :class:`_TooLarge` past the limit."""
        self.size += len(chunk)
        if self.size > self.limit:
            raise _TooLarge(self.status)
        self.parts.append(chunk)

    def answer(self) -> _Answer:
        """The whole answer, read."""
        return _Answer(self.status, self.headers, b"".join(self.parts))


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
    from policyopt.remote.taskapp.outbound import OutboundRefused

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
