"""The job client: :class:`PolicyOptimizationJob` (:mod:`~.jobs`) submits a job config to a job
server, polls or streams its events and fetches its results, read as the models of
:mod:`~.answers`; it imports neither the server nor the store."""

from __future__ import annotations

from policyopt.remote.client.answers import (
    JobError,
    JobEvent,
    JobResults,
    JobStatus,
    JobTimeoutError,
    RankedPrompt,
    normalize_status,
    parse_sse,
)
from policyopt.remote.client.jobs import ENV_API_KEY, ENV_BACKEND_URL, PolicyOptimizationJob

__all__ = [
    "ENV_API_KEY",
    "ENV_BACKEND_URL",
    "JobError",
    "JobEvent",
    "JobResults",
    "JobStatus",
    "JobTimeoutError",
    "PolicyOptimizationJob",
    "RankedPrompt",
    "normalize_status",
    "parse_sse",
]
