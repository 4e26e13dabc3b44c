"""``PolicyOptimizationJob``: submit a job to a policyopt job server and follow it.

Shaped like the Synth SDK's class of the same name so that its users feel at home::

    job = PolicyOptimizationJob.from_config("job.toml")    # URL/key from args or environment
    job.submit()                                          # checks the task app's /health first
    result = job.stream_until_complete(timeout=3600)      # or poll_until_complete(...)
    print(result.status, result.best_score, job.get_best_prompt_text())

The backend URL and API key come from the arguments or from ``$POLICYOPT_BACKEND_URL`` and
``$POLICYOPT_API_KEY``. Unlike Synth's, an unknown algorithm is an error (never a silent
GEPA), ``on_event`` is called for every event, a timeout raises, and the event stream resumes
after a dropped connection from the last event seen (``Last-Event-ID``) without gaps or repeats.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from policyopt.errors import ConfigError
from policyopt.remote.client.answers import (
    JobError,
    JobEvent,
    JobResults,
    JobStatus,
    JobTimeoutError,
    parse_sse,
)

__all__ = ["ENV_API_KEY", "ENV_BACKEND_URL", "PolicyOptimizationJob"]

ENV_BACKEND_URL = "POLICYOPT_BACKEND_URL"
ENV_API_KEY = "POLICYOPT_API_KEY"
JOBS = "/api/policy-optimization/online/jobs"


def _load_table(path: str | Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"Job config file {str(file)!r} does not exist.")
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file} is not valid TOML: {exc}") from None


def _with_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    out = dict(data)
    if not overrides:
        return out
    for name in ("policy_optimization", "prompt_learning"):
        if isinstance(out.get(name), Mapping):
            table = dict(out[name])
            table["overrides"] = {**(table.get("overrides") or {}), **overrides}
            out[name] = table
            return out
    out["overrides"] = {**(out.get("overrides") or {}), **overrides}
    return out


class PolicyOptimizationJob:
    """A job on a policyopt job server: build it from a config, ``submit()``, then follow it.

    ``backend_url`` / ``api_key`` default to ``$POLICYOPT_BACKEND_URL`` / ``$POLICYOPT_API_KEY``.
    """

    def __init__(
        self,
        config: Any = None,
        *,
        backend_url: str | None = None,
        api_key: str | None = None,
        job_id: str | None = None,
        skip_health_check: bool = False,
        request_timeout: float = 30.0,
        transport: Any = None,
    ) -> None:
        import httpx

        url = (backend_url or os.environ.get(ENV_BACKEND_URL, "")).strip().rstrip("/")
        key = (api_key or os.environ.get(ENV_API_KEY, "")).strip()
        if not url:
            raise ConfigError(
                f"No job server URL: pass backend_url=... or set ${ENV_BACKEND_URL} "
                "(e.g. http://127.0.0.1:8000)."
            )
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"backend_url must start with http:// or https://; got {url!r}.")
        if not key:
            raise ConfigError(
                f"No API key for the job server: pass api_key=... or set ${ENV_API_KEY}."
            )
        self.config = config
        self.backend_url = url
        self.skip_health_check = skip_health_check
        self._job_id = job_id
        self._http = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {key}", "User-Agent": "policyopt-client"},
            timeout=request_timeout,
            transport=transport,
        )

    # ---------------------------------------------------------------- constructors
    @classmethod
    def from_config(
        cls,
        config_path: str | Path,
        backend_url: str | None = None,
        api_key: str | None = None,
        *,
        overrides: Mapping[str, Any] | None = None,
        skip_health_check: bool = False,
    ) -> PolicyOptimizationJob:
        """A job from a TOML file (``[policy_optimization]`` or ``[prompt_learning]``)."""
        return cls.from_dict(
            _load_table(config_path),
            backend_url,
            api_key,
            overrides=overrides,
            skip_health_check=skip_health_check,
        )

    @classmethod
    def from_dict(
        cls,
        config_dict: Mapping[str, Any],
        backend_url: str | None = None,
        api_key: str | None = None,
        *,
        overrides: Mapping[str, Any] | None = None,
        skip_health_check: bool = False,
    ) -> PolicyOptimizationJob:
        """A job from a dict shaped like the TOML file (validated here, before any request)."""
        from policyopt.remote.config import JobConfig

        config = JobConfig.from_dict(_with_overrides(config_dict, overrides))
        ref = config.task_app
        if ref.api_key_env is not None:  # resolved here: the server never reads its environment
            task = ref.model_copy(update={"api_key": ref.resolved_api_key(), "api_key_env": None})
            config = config.model_copy(update={"task_app": task})
        return cls(
            config, backend_url=backend_url, api_key=api_key, skip_health_check=skip_health_check
        )

    @classmethod
    def from_job_id(
        cls, job_id: str, backend_url: str | None = None, api_key: str | None = None
    ) -> PolicyOptimizationJob:
        """Follow a job submitted before (by id)."""
        if not isinstance(job_id, str) or not job_id.strip():
            raise ConfigError("job_id must be a non-empty string.")
        return cls(None, backend_url=backend_url, api_key=api_key, job_id=job_id.strip())

    # ---------------------------------------------------------------- plumbing
    @property
    def job_id(self) -> str | None:
        """The server's id of the job (None until submitted)."""
        return self._job_id

    @property
    def algorithm(self) -> str | None:
        """``gepa`` or ``mipro`` (None for a job followed by id)."""
        return None if self.config is None else str(self.config.algorithm)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def __enter__(self) -> PolicyOptimizationJob:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _need_id(self) -> str:
        if self._job_id is None:
            raise JobError("The job is not submitted yet: call submit() first.")
        return self._job_id

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise JobError(f"Cannot reach the job server at {self.backend_url}: {exc}") from exc
        return self._check(response)

    def _check(self, response: Any) -> Any:
        if response.status_code < 400:
            return response.json()
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        hint = {
            401: " Check the API key (argument api_key or $POLICYOPT_API_KEY).",
            404: " The id is unknown to this server, or the job belongs to another API key.",
        }.get(response.status_code, "")
        raise JobError(
            f"The job server answered {response.status_code}: {detail}{hint}",
            status_code=response.status_code,
        )

    # ---------------------------------------------------------------- API
    def submit(self) -> str:
        """Check the task app's health, submit the job and return its id."""
        if self._job_id is not None:
            raise JobError(f"This job was already submitted as {self._job_id}.")
        if self.config is None:
            raise JobError("A job followed by id has no config to submit.")
        if not self.skip_health_check:
            self._check_task_app()
        body = self._request("POST", JOBS, json=self.config.to_dict())
        self._job_id = str(body.get("job_id") or body["id"])
        return self._job_id

    def _check_task_app(self) -> None:
        from policyopt.remote.taskapp.client import TaskAppClient

        ref = self.config.task_app
        try:
            with TaskAppClient(ref.url, ref.api_key, timeout=10.0, retries=1) as client:
                client.health()
        except Exception as exc:
            raise JobError(
                f"The task app at {ref.url} is not healthy, so the job was not submitted: "
                f"{exc}. Start it (policyopt task-app module:object) or fix task_app.url / "
                "api_key; skip_health_check=True submits anyway."
            ) from exc

    def get_status(self) -> JobStatus:
        """The job's current status."""
        return JobStatus.model_validate(self._request("GET", f"{JOBS}/{self._need_id()}"))

    def get_results(self) -> JobResults:
        """The job's results (``final`` once it has ended)."""
        data = self._request("GET", f"{JOBS}/{self._need_id()}/results")
        return JobResults.model_validate(data)

    def get_events(self, since_seq: int = 0, limit: int = 500) -> list[JobEvent]:
        """Events with ``seq > since_seq``, in order."""
        data = self._request(
            "GET",
            f"{JOBS}/{self._need_id()}/events",
            params={"since_seq": since_seq, "limit": limit},
        )
        return [JobEvent.model_validate(e) for e in data["events"]]

    def get_best_prompt_text(self, rank: int = 1) -> str | None:
        """The text of the prompt ranked ``rank`` (1 = best) by validation score."""
        return self.get_results().prompt_text(rank)

    def cancel(self, reason: str | None = None) -> JobStatus:
        """Ask the server to cancel; the optimizer stops at its next check (keep following the
        job until a terminal status)."""
        body = {} if reason is None else {"reason": reason}
        return JobStatus.model_validate(
            self._request("POST", f"/api/jobs/{self._need_id()}/cancel", json=body)
        )

    def poll_until_complete(
        self,
        timeout: float = 3600.0,
        interval: float = 5.0,
        progress: bool = False,
        on_status: Callable[[JobStatus], object] | None = None,
        max_errors: int = 5,
    ) -> JobResults:
        """Poll the status until the job ends; returns its results.

        Up to ``max_errors`` failed polls in a row are tolerated (a server restart); past
        ``timeout`` seconds :class:`JobTimeoutError` is raised (the job keeps running).
        """
        deadline = time.monotonic() + timeout
        errors = 0
        while True:
            try:
                status = self.get_status()
                errors = 0
            except JobError as exc:
                if exc.status_code is not None and exc.status_code < 500:
                    raise
                errors += 1
                if errors > max_errors:
                    raise
                status = None
            if status is not None:
                if on_status is not None:
                    on_status(status)
                if progress:
                    _print_status(status)
                if status.is_terminal:
                    return self.get_results()
            if time.monotonic() + interval > deadline:
                raise JobTimeoutError(
                    f"Job {self._job_id} did not finish within {timeout:g} s "
                    f"(last status: {status.status.value if status else 'unknown'})."
                )
            time.sleep(interval)

    def stream_until_complete(
        self,
        timeout: float = 3600.0,
        handlers: Mapping[str, Callable[[JobEvent], object]] | None = None,
        on_event: Callable[[JobEvent], object] | None = None,
        *,
        max_reconnects: int = 20,
        read_timeout: float = 60.0,
    ) -> JobResults:
        """Follow the job's server-sent events until its terminal event; returns its results.

        ``on_event(event)`` is called for every event, ``handlers[event.type](event)`` for the
        types it names (``"*"``: all). A dropped connection is resumed from the last event seen
        (``Last-Event-ID``): no event is delivered twice or skipped. Past ``timeout`` seconds
        :class:`JobTimeoutError` is raised.
        """
        import httpx

        job_id = self._need_id()
        deadline = time.monotonic() + timeout
        last = 0
        reconnects = 0
        handlers = dict(handlers or {})
        while True:
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
            if last:
                headers["Last-Event-ID"] = str(last)
            left = deadline - time.monotonic()
            if left <= 0:
                raise JobTimeoutError(f"Job {job_id} did not finish within {timeout:g} s.")
            try:
                with self._http.stream(
                    "GET",
                    f"{JOBS}/{job_id}/events/stream",
                    headers=headers,
                    timeout=httpx.Timeout(10.0, read=min(read_timeout, max(left, 0.1))),
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        self._check(response)
                    for item in parse_sse(_until(response.iter_lines(), deadline, job_id)):
                        event = JobEvent.model_validate(json.loads(item["data"]))
                        if event.seq <= last:
                            continue
                        last = event.seq
                        reconnects = 0
                        if on_event is not None:
                            on_event(event)
                        for name in (event.type, "*"):
                            if name in handlers:
                                handlers[name](event)
                        if event.terminal:
                            return self.get_results()
                        if time.monotonic() > deadline:
                            raise JobTimeoutError(
                                f"Job {job_id} did not finish within {timeout:g} s."
                            )
                # the stream closed without a terminal event: has the job ended anyway?
                if self.get_status().is_terminal and not self._events_after(last):
                    return self.get_results()
            except (httpx.TransportError, JobError) as exc:
                refused = isinstance(exc, JobError) and (exc.status_code or 500) < 500
                if refused:
                    raise
                reconnects += 1
                if reconnects > max_reconnects:
                    raise JobError(
                        f"Lost the event stream of job {job_id} {reconnects} times in a row: {exc}"
                    ) from exc
            time.sleep(min(5.0, 0.2 * 2 ** min(reconnects, 5)))

    def _events_after(self, seq: int) -> bool:
        return bool(self.get_events(since_seq=seq, limit=1))


def _until(lines: Iterator[str], deadline: float, job_id: str) -> Iterator[str]:
    """The stream's lines, raising :class:`JobTimeoutError` once ``deadline`` has passed (checked
    on every line, keep-alive comments included, so a quiet job cannot overrun the timeout)."""
    for line in lines:
        if time.monotonic() > deadline:
            raise JobTimeoutError(f"Job {job_id} did not finish in the time allowed.")
        yield line


def _print_status(status: JobStatus) -> None:
    spent = status.progress.rollouts_used
    budget = status.progress.max_rollouts
    best = "-" if status.best_score is None else f"{status.best_score:.4f}"
    print(
        f"[{status.job_id}] {status.status.value}: {spent}/{budget or '?'} rollouts, best {best}",
        file=sys.stderr,
        flush=True,
    )
