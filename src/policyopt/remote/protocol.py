"""The task-app wire protocol: plain JSON over HTTP, shared by the task app and its client.

A task app answers ``GET /health`` (:class:`Health`), ``GET /task_info`` (:class:`TaskInfo`)
and ``POST /rollout`` (:class:`RolloutRequest` -> :class:`RolloutResponse`). A rollout whose
evaluation failed answers HTTP 500 with :class:`RolloutFailure`; see
``docs/task-app-protocol.md``. Any language can implement it; nothing here is Python-specific.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

__all__ = [
    "MAX_OUTPUT_CHARS",
    "PROTOCOL_VERSION",
    "ROLLOUT_FAILED",
    "Health",
    "RolloutFailure",
    "RolloutRequest",
    "RolloutResponse",
    "TaskInfo",
    "json_safe",
]

#: version of this protocol; a task app reports it in /health and /task_info
PROTOCOL_VERSION = 1
#: ``error.type`` of a 500 answer meaning "the evaluation itself failed" (not retried)
ROLLOUT_FAILED = "rollout_failed"
#: an ``output`` longer than this (as text) is cut, so answers stay small
MAX_OUTPUT_CHARS = 20_000


class _Message(BaseModel):
    """Incoming messages: unknown fields are ignored, so newer peers stay compatible."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Health(_Message):
    """``GET /health``: the app is up and the caller's key was accepted."""

    status: Literal["ok"] = "ok"
    healthy: bool = True
    service: str = Field(default="", description="the task's name")
    protocol_version: int = PROTOCOL_VERSION
    auth_required: bool = False


class TaskInfo(_Message):
    """``GET /task_info``: the task's name and, per split, the ids of its examples."""

    name: str = ""
    description: str = ""
    protocol_version: int = PROTOCOL_VERSION
    splits: dict[str, list[str]] = Field(
        default_factory=dict, description="split name -> example ids"
    )
    counts: dict[str, int] = Field(default_factory=dict, description="split name -> size")

    @model_validator(mode="after")
    def _counts(self) -> TaskInfo:
        if not self.counts and self.splits:
            object.__setattr__(self, "counts", {k: len(v) for k, v in self.splits.items()})
        return self

    def ids(self, split: str | None = None) -> list[str]:
        """The ids of one split, or of every split in order (each id once)."""
        if split is not None:
            return list(self.splits.get(split, []))
        return list(dict.fromkeys(i for ids in self.splits.values() for i in ids))


class RolloutRequest(BaseModel):
    """``POST /rollout`` body: score ``prompt`` on the example ``example_id``.

    ``policy`` is free-form (model, temperature, ...): the job's ``models.policy``, passed
    through untouched. ``run_id`` names the job that asks, for the task app's logs.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    example_id: str = Field(min_length=1, max_length=1000)
    prompt: str | dict[str, str] | list[dict[str, str]] = Field(
        description="the candidate prompt: a text, named text components, or chat messages"
    )
    policy: dict[str, Any] = Field(default_factory=dict)
    run_id: str | None = Field(default=None, max_length=200)


class RolloutResponse(_Message):
    """``POST /rollout`` answer: the score (0..1), feedback, named objectives, the output."""

    example_id: str
    score: float = Field(ge=0.0, le=1.0)
    feedback: str | None = None
    objectives: dict[str, float] | None = None
    output: JsonValue = None

    @field_validator("score")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("objectives")
    @classmethod
    def _finite_objectives(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is not None:
            for name, number in value.items():
                if not math.isfinite(number):
                    raise ValueError(f"objective {name!r} must be a finite number")
        return value


class RolloutError(_Message):
    """The ``error`` member of a :class:`RolloutFailure`."""

    type: str = ROLLOUT_FAILED
    message: str = ""
    exception: str | None = Field(default=None, description="the exception's class name, if any")


class RolloutFailure(_Message):
    """HTTP 500 body when evaluating the example failed: a failed rollout, not retried."""

    example_id: str | None = None
    error: RolloutError
    detail: str = ""


def json_safe(value: Any, limit: int = MAX_OUTPUT_CHARS) -> JsonValue:
    """``value`` if it survives JSON as it is (cut to ``limit`` characters), else its repr."""
    if isinstance(value, str):
        return value[:limit]
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)[:limit]
    if len(text) > limit:
        return text[:limit]
    parsed: JsonValue = json.loads(text)
    return parsed
