"""What a job server answers, as the client reads it: job states and statuses, results and
ranked prompts, events (and the server-sent-event parser), and the client's errors."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from policyopt.errors import ConfigError, PolicyOptError
from policyopt.remote.api_schema import JobState

__all__ = [
    "JobError",
    "JobEvent",
    "JobResults",
    "JobStatus",
    "JobTimeoutError",
    "RankedPrompt",
    "normalize_status",
    "parse_sse",
]

_SYNONYMS = {
    "success": "succeeded",
    "completed": "succeeded",
    "complete": "succeeded",
    "canceled": "cancelled",
    "cancel": "cancelled",
    "failure": "failed",
    "error": "failed",
    "in_progress": "running",
}


class JobError(PolicyOptError, RuntimeError):
    """The job server refused a request or could not be reached; ``status_code`` when it
    answered."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class JobTimeoutError(PolicyOptError, TimeoutError):
    """The job did not finish within the time the caller allowed (it keeps running)."""


def normalize_status(value: object) -> JobState:
    """A job state from a server's string (``completed`` -> succeeded, ``canceled`` ->
    cancelled, ...); an unknown string is an error, not a silent default."""
    text = str(value).strip().lower()
    text = _SYNONYMS.get(text, text)
    try:
        return JobState(text)
    except ValueError:
        raise JobError(f"The server reported an unknown job status {value!r}.") from None


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Progress(_Model):
    """Rollouts spent so far and the budget."""

    rollouts_used: int = 0
    max_rollouts: int | None = None


class JobStatus(_Model):
    """A job's status: state, times, progress and the best prompt so far."""

    job_id: str
    status: JobState
    algorithm: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    progress: Progress = Field(default_factory=Progress)
    best_score: float | None = None
    best_prompt: str | dict[str, str] | list[dict[str, str]] | None = None
    error: str | None = None
    cancel_requested: bool = False
    last_seq: int = 0

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: object) -> JobState:
        return normalize_status(value)

    @property
    def succeeded(self) -> bool:
        """The job finished and has a result."""
        return self.status is JobState.SUCCEEDED

    @property
    def failed(self) -> bool:
        """The job ended with an error (see :attr:`error`)."""
        return self.status is JobState.FAILED

    @property
    def cancelled(self) -> bool:
        """The job was cancelled (its partial result is kept)."""
        return self.status is JobState.CANCELLED

    @property
    def is_terminal(self) -> bool:
        """The job will not change any more."""
        return self.status.terminal


class RankedPrompt(_Model):
    """One prompt of the results, ranked by its validation score."""

    rank: int
    candidate: int
    prompt: str | dict[str, str] | list[dict[str, str]]
    val_score: float | None
    n_val: int = 0
    origin: str = ""
    parents: list[int] = Field(default_factory=list)
    found_at_rollout: int = 0


class JobResults(JobStatus):
    """A job's results: best prompt, ranked prompts, history, test scores and usage.

    ``final`` is False while the job runs (then only the best so far is known).
    """

    final: bool = False
    stop_reason: str | None = None
    top_prompts: list[RankedPrompt] = Field(default_factory=list)
    history: list[dict[str, Any]] = Field(default_factory=list)
    test: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None

    def prompt_text(self, rank: int = 1) -> str | None:
        """The prompt at ``rank`` (1 = best) as text, or None when there is no such rank."""
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ConfigError(f"rank must be an int >= 1; got {rank!r}.")
        for item in self.top_prompts:
            if item.rank == rank:
                return _text(item.prompt)
        if rank == 1 and self.best_prompt is not None:
            return _text(self.best_prompt)
        return None


class JobEvent(_Model):
    """One event of a job's stream; ``seq`` increases by one per job."""

    job_id: str
    seq: int
    type: str
    ts: float = 0.0
    level: str = "info"
    message: str = ""
    data: dict[str, Any] = Field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        """The event that ends the job's stream."""
        return self.type in ("job.succeeded", "job.failed", "job.cancelled")


def _text(prompt: str | Mapping[str, str] | Sequence[Mapping[str, str]]) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Mapping):
        return "\n\n".join(f"[{name}]\n{text}" for name, text in prompt.items())
    return "\n\n".join(f"[{m.get('role', '?')}]\n{m.get('content', '')}" for m in prompt)


def parse_sse(lines: Iterable[str]) -> Iterator[dict[str, str]]:
    """Server-sent events from text lines: ``{"id", "event", "data"}`` per event (comments and
    ``retry`` lines skipped; several ``data`` lines are joined with newlines)."""
    fields: dict[str, str] = {}
    data: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield {**fields, "data": "\n".join(data)}
            fields, data = {}, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name in ("id", "event"):
            fields[name] = value
    if data:
        yield {**fields, "data": "\n".join(data)}
