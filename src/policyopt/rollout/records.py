"""What the engine hands back and writes down: rollouts, batches, journal records; and the
checks of the engine's settings (budget, parallelism, timeout, backend, picklability, score
range) and of the scores ``evaluate`` returns.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import joblib

from policyopt.errors import ConfigError, describe
from policyopt.rollout.dask_backend import is_dask
from policyopt.types import ExampleId, Score

__all__ = ["BatchResult", "Rollout", "check_backend"]

_TRACE_LIMIT = 20_000  # characters of JSON kept per trace/output; longer ones are cut


@dataclass(frozen=True, slots=True)
class Rollout:
    """One finished evaluation of a prompt on an example."""

    prompt_key: str
    split: str
    example_id: ExampleId
    score: Score
    error: str | None = None
    cached: bool = False
    duration_s: float = 0.0

    @property
    def failed(self) -> bool:
        """True when ``evaluate`` raised, timed out or returned a non-finite score."""
        return self.error is not None

    @property
    def value(self) -> float:
        """The scalar score (the failure score for a failed rollout)."""
        return self.score.score


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Rollouts of one batch in input order; ``None`` where the budget cut the request."""

    rollouts: tuple[Rollout | None, ...]
    n_cut: int

    @property
    def complete(self) -> bool:
        """True when every requested rollout is present (the budget cut nothing)."""
        return self.n_cut == 0

    def __len__(self) -> int:
        return len(self.rollouts)

    def __getitem__(self, index: int) -> Rollout | None:
        return self.rollouts[index]

    def done(self) -> list[Rollout]:
        """The rollouts that exist (all of them when :attr:`complete`)."""
        return [r for r in self.rollouts if r is not None]

    def scores(self) -> list[float]:
        """Scalar scores in input order; raises if the budget cut part of the batch."""
        if not self.complete:
            raise ConfigError("scores() of a batch the budget cut: check .complete first.")
        return [r.value for r in self.rollouts if r is not None]


def check_backend(backend: object) -> None:
    """Raise :class:`ConfigError` unless ``backend`` is ``None``, a joblib backend or its name,
    or a Dask one (``"dask"``, ``"dask://ADDRESS"``, a ``distributed.Client``)."""
    if (
        backend is None
        or isinstance(backend, joblib.parallel.ParallelBackendBase)
        or is_dask(backend)
    ):
        return
    if not isinstance(backend, str):
        raise ConfigError(
            "The 'backend' parameter must be a joblib backend name (e.g. 'threading', 'loky', "
            f"'dask') or None; got {describe(backend)} instead."
        )
    known = set(joblib.parallel.BACKENDS) | set(joblib.parallel.EXTERNAL_BACKENDS)
    if backend not in known:
        raise ConfigError(
            f"The 'backend' parameter must be a registered joblib backend; got {backend!r}. "
            f"Known: {sorted(known)}. For Ray, call ray.util.joblib.register_ray() first; for "
            "Dask, use 'dask' (the current distributed.Client) or 'dask://tcp://host:8786'."
        )


#: joblib backends that run rollouts in this process (nothing is pickled)
_IN_PROCESS = frozenset({"threading", "sequential"})


def runs_in_process(backend: object) -> bool:
    """True when rollouts run on threads of this process (they journal themselves)."""
    if backend is None or (isinstance(backend, str) and backend in _IN_PROCESS):
        return True
    return bool(getattr(backend, "uses_threads", False))


def check_settings(max_rollouts: object, n_jobs: object, timeout: object) -> None:
    """Validate the engine's budget, parallelism and timeout; one clear line when bad."""
    if max_rollouts is not None and (
        isinstance(max_rollouts, bool) or not isinstance(max_rollouts, int) or max_rollouts < 1
    ):
        raise ConfigError(
            "The 'max_rollouts' parameter must be an int >= 1 or None; got "
            f"{describe(max_rollouts)} instead."
        )
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0 or n_jobs < -1:
        raise ConfigError(
            f"The 'n_jobs' parameter must be an int >= 1 (or -1 for all cores); got "
            f"{describe(n_jobs)} instead."
        )
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
    ):
        raise ConfigError(
            f"The 'timeout' parameter must be a number of seconds > 0 or None; got "
            f"{describe(timeout)}."
        )


def out_of_range(score: Score, score_range: tuple[float, float] | None) -> str | None:
    """Why ``score`` is outside ``score_range`` (with the fix), or None when it is inside."""
    if score_range is None:
        return None
    low, high = score_range
    if low - 1e-9 <= score.score <= high + 1e-9:
        return None
    return (
        f"evaluate returned the score {score.score!r}, outside score_range=[{low:g}, "
        f"{high:g}]. Return scores in [{low:g}, {high:g}] ({high:g} = perfect), or declare "
        "your range: e.g. GEPA(..., score_range=(0, 10)), whose top is then the perfect "
        "score (score_range=None turns the check off)."
    )


def failed_rollout(
    key: tuple[str, str, ExampleId], message: str, duration_s: float, failure_score: float
) -> Rollout:
    """A failed rollout of ``key``: scored ``failure_score``, its message kept as feedback."""
    return Rollout(
        key[0],
        key[1],
        key[2],
        Score(failure_score, feedback=f"Rollout failed: {message}"),
        message,
        False,
        duration_s,
    )


def check_score_range(score_range: object) -> tuple[float, float] | None:
    """Validate ``score_range``: None (no check) or ``(low, high)`` with ``low < high``."""
    if score_range is None:
        return None
    if (
        isinstance(score_range, (tuple, list))
        and len(score_range) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in score_range)
        and all(math.isfinite(v) for v in score_range)
        and score_range[0] < score_range[1]
    ):
        return float(score_range[0]), float(score_range[1])
    raise ConfigError(
        "The 'score_range' parameter must be a pair (low, high) of finite numbers with "
        f"low < high, or None; got {describe(score_range)}."
    )


def check_shippable(evaluate: Callable[[Any, Any], object], backend: object) -> None:
    """Fail fast when a process or cluster backend cannot pickle ``evaluate``.

    Without this, joblib fails (or, on Dask, hangs) deep inside a batch.
    """
    if runs_in_process(backend):
        return
    try:
        import cloudpickle as pickler  # what joblib itself uses to ship functions
    except ImportError:  # pragma: no cover - joblib depends on it
        import pickle as pickler

    try:
        pickler.dumps(evaluate)
    except Exception as exc:
        raise ConfigError(
            f"The {backend!r} backend runs rollouts in other processes, so 'evaluate' must be "
            f"picklable, and it is not ({type(exc).__name__}: {exc}). Create LM and HTTP "
            "clients inside evaluate (or lazily per process), or use backend='threading'."
        ) from exc


def _jsonable(value: Any) -> Any:
    """A JSON-safe copy of ``value`` (repr for the rest), cut to a bounded size."""
    if value is None or isinstance(value, (bool, int, str)):
        return (
            value
            if not isinstance(value, str) or len(value) <= _TRACE_LIMIT
            else value[:_TRACE_LIMIT]
        )
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    text = json.dumps(value, default=repr, ensure_ascii=False)
    if len(text) > _TRACE_LIMIT:
        return text[:_TRACE_LIMIT] + "...[cut]"
    return json.loads(text)


def settle(score: Score) -> Score:
    """Make output/trace JSON-safe so a fresh run and a resumed one see identical rollouts."""
    if score.output is None and score.trace is None:
        return score
    return Score(
        score.score,
        feedback=score.feedback,
        output=_jsonable(score.output),
        trace=_jsonable(score.trace),
        objectives=score.objectives,
    )


def to_record(rollout: Rollout, seq: int | None) -> dict[str, Any]:
    score = rollout.score
    return {
        "type": "rollout",
        "n": seq,
        "prompt": rollout.prompt_key,
        "split": rollout.split,
        "example": rollout.example_id,
        "score": score.score,
        "feedback": score.feedback,
        "objectives": score.objectives,
        "output": score.output,
        "trace": score.trace,
        "error": rollout.error,
        "duration_s": round(rollout.duration_s, 6),
    }
