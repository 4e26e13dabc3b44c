"""The job client: :class:`PolicyOptimizationJob` submits a job config to a job server, polls or
streams its events and fetches its results (imports neither the server nor the store)."""

from __future__ import annotations

from policyopt.remote.client.jobs import (
    ENV_API_KEY,
    ENV_BACKEND_URL,
    JobError,
    JobEvent,
    JobResults,
    JobStatus,
    JobTimeoutError,
    PolicyOptimizationJob,
    RankedPrompt,
    normalize_status,
    parse_sse,
)

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
