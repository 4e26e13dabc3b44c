"""What a job's run leaves in the store: its events, live progress and best, and its results.

The optimizer's events become the job's event stream (:data:`EVENT_TYPES`) through
:class:`JobListener`, which also keeps the job's progress and best prompt current;
:func:`build_results` makes the results body; :func:`scrub_paths` keeps this machine's file
paths out of what a job's owner is shown. Split from :mod:`policyopt.remote.server.runner`, which
re-exports the public names.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from policyopt.events import (
    BatchDone,
    CandidateEvaluated,
    CandidateProposed,
    Event,
    NewBest,
    ProposalJudged,
    RolloutsProgress,
    RunFinished,
    RunStarted,
)
from policyopt.remote.store import JobRecord, JobStore
from policyopt.types import encodable

if TYPE_CHECKING:  # pragma: no cover
    from policyopt.types import OptimizationResult

__all__ = [
    "EVENT_TYPES",
    "JobListener",
    "build_results",
    "failure_reason",
    "scrub_paths",
    "storable",
]

#: optimizer event kind -> event type in the job's stream
EVENT_TYPES = {
    RunStarted.kind: "run.started",
    BatchDone.kind: "rollouts.batch_done",
    RolloutsProgress.kind: "rollouts.progress",
    CandidateProposed.kind: "candidate.proposed",
    CandidateEvaluated.kind: "candidate.evaluated",
    NewBest.kind: "candidate.new_best",
    ProposalJudged.kind: "proposal.judged",
    RunFinished.kind: "run.finished",
}


def storable(text: str) -> str:
    """``text`` with NUL (no PostgreSQL text column holds it) and lone surrogates (no UTF-8
    answer does) replaced by U+FFFD: a task app's error, feedback or output can hold them, and
    stored as they were they broke the job's reads (500s)."""
    return encodable(text).replace("\x00", "\ufffd")


def _jsonable(value: Any) -> Any:
    """A JSON-safe, storable copy (non-finite floats become None: JSON has no NaN; text
    loses its NUL and lone surrogates)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {storable(str(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, str):
        return storable(value)
    if value is None or isinstance(value, (int, bool)):
        return value
    return storable(repr(value))


class JobListener:
    """Writes a job's optimizer events to the store and keeps its progress and best current."""

    def __init__(self, store: JobStore, job: JobRecord, initial_prompt: Any) -> None:
        self.store = store
        self.job_id = job.id
        self.prompts: dict[int, Any] = {0: initial_prompt}
        self.max_rollouts = job.progress.get("max_rollouts")
        self.best_score: float | None = None
        self._lock = threading.Lock()
        self.detached = False  # set when the server stopped waiting for this run

    def __call__(self, event: Event) -> None:
        if self.detached:
            return
        data = event.to_dict()
        data.pop("kind", None)
        data.pop("time", None)
        type_ = EVENT_TYPES.get(event.kind, event.kind)
        if isinstance(event, RunStarted):
            data.pop("settings", None)  # large, and already in the job's config
        if isinstance(data.get("last_error"), str):  # a rollout's error names server files
            data["last_error"] = scrub_paths(data["last_error"])
        message = storable(_describe(event))
        self.store.append_event(self.job_id, type_, _jsonable(data), message=message)
        if isinstance(event, (BatchDone, RolloutsProgress)):
            self.max_rollouts = event.max_rollouts
            progress = {"rollouts_used": event.rollouts_used, "max_rollouts": event.max_rollouts}
            self.store.update_job(self.job_id, progress=progress)
        elif isinstance(event, CandidateProposed):
            with self._lock:
                self.prompts[event.candidate] = event.prompt
        elif isinstance(event, NewBest):
            with self._lock:
                prompt = self.prompts.get(event.candidate)
            fields: dict[str, Any] = {"best_score": _jsonable(event.score)}
            if prompt is not None:
                fields["best_prompt"] = _jsonable(prompt)
            self.store.update_job(self.job_id, **fields)


def _describe(event: Event) -> str:
    if isinstance(event, NewBest):
        return f"new best: candidate {event.candidate} scores {event.score:.4f}"
    if isinstance(event, CandidateProposed):
        return f"candidate {event.candidate} proposed ({event.origin})"
    if isinstance(event, CandidateEvaluated):
        return f"candidate {event.candidate} scored {event.score:.4f} on {event.split}"
    if isinstance(event, BatchDone):
        return f"{event.n_run} rollouts run, {event.n_cached} cached ({event.label})"
    if isinstance(event, RunFinished):
        return f"search finished: {event.stop_reason}"
    if isinstance(event, RunStarted):
        return f"{event.optimizer} search started"
    return event.kind


def build_results(
    store: JobStore,
    job_id: str,
    result: OptimizationResult,
    test: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The results body: best prompt, ranked prompts, history, test scores, usage."""
    ranked = sorted(result.candidates, key=lambda c: (-c.val_score, c.index))
    top = [
        {
            "rank": rank,
            "candidate": c.index,
            "prompt": c.prompt,
            "val_score": _jsonable(c.val_score),
            "n_val": len(c.val_scores),
            "origin": c.origin,
            "parents": list(c.parents),
            "found_at_rollout": c.found_at_rollout,
        }
        for rank, c in enumerate(ranked, start=1)
        if c.val_scores
    ]
    history: list[dict[str, Any]] = []
    seen: set[tuple[str, Any]] = set()
    since = 0
    while True:
        batch = store.events(job_id, since_seq=since, limit=5000)
        if not batch:
            break
        since = batch[-1].seq
        for event in batch:
            if event.type not in ("candidate.proposed", "candidate.new_best"):
                continue
            key = (event.type, event.data.get("candidate"))
            if key in seen:  # a resumed run replays its events
                continue
            seen.add(key)
            history.append({"seq": event.seq, "ts": event.ts, "type": event.type, **event.data})
    usage = {
        "rollouts": result.n_rollouts,
        "max_rollouts": result.max_rollouts,
        "test_rollouts": 0 if test is None else test.get("rollouts", 0),
        "lm_usage": {k: v.model_dump() for k, v in result.lm_usage.items()},
        "cost_usd": result.cost_usd,
        # the optimizer-LM calls billed (every segment of a resumed run): the key's quota charge
        "lm_calls": sum(u.calls for u in result.lm_usage.values()),
        "wall_time_s": result.wall_time_s,
    }
    return _jsonable(
        {
            "best_prompt": result.best_prompt,
            "best_score": result.best_score,
            "best_candidate": result.best_candidate,
            "stop_reason": result.stop_reason,
            "top_prompts": top,
            "history": history,
            "test": test,
            "usage": usage,
        }
    )


def failure_reason(exc: BaseException) -> str:
    """The failure reason shown to the job's owner: the error's type and message, with the
    server's file paths (home, data dir, Python install) replaced by ``<path>``."""
    return scrub_paths(f"{type(exc).__name__}: {str(exc).strip() or repr(exc)}")


#: an absolute file path (not the path part of a URL: no scheme, host or dot before it)
_PATH = re.compile(r"(?<![\w:/.@~-])(?:~/|/)(?:[\w.+@-]+/)*[\w.+@-]+")


def scrub_paths(text: str) -> str:
    """``text`` without file paths of this machine (each becomes ``<path>``), without the
    Python version or home directory it may name, and :func:`storable`."""
    home = os.path.expanduser("~")
    if len(home) > 1:
        text = text.replace(home, "~")
    text = _PATH.sub("<path>", text)
    return storable(re.sub(r"[Pp]ython ?3\.\d+(?:\.\d+)?", "Python", text))
