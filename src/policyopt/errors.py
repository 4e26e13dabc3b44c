"""Exceptions raised by policyopt.

Every error inherits from :class:`PolicyOptError` and from the builtin it resembles, so callers
can catch either ``policyopt.errors.ConfigError`` or ``ValueError``::

    PolicyOptError
    ├── ConfigError (ValueError)              a setting or an argument is invalid
    │   └── DatasetError                      trainset/valset is empty, has duplicate ids, ...
    ├── ScoreTypeError (TypeError)            evaluate() returned something that is not a score
    ├── EvaluationError (RuntimeError)        evaluate() or its backend looks broken (error rate)
    ├── StopRequested (RuntimeError)          a stop fired mid-batch (STOP file, time limit)
    ├── BudgetExhausted (RuntimeError)        the rollout budget is spent (raised only on request)
    ├── LMError (RuntimeError)                an LM call failed after its retries
    ├── MissingDependencyError (ImportError)  an optional extra is not installed
    └── StateError (RuntimeError)             a run_dir cannot be resumed (corrupt, other settings)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "BudgetExhausted",
    "ConfigError",
    "DatasetError",
    "EvaluationError",
    "LMError",
    "MissingDependencyError",
    "PolicyOptError",
    "ScoreTypeError",
    "StateError",
    "StopRequested",
]


class PolicyOptError(Exception):
    """Root of every exception policyopt raises on purpose."""


class ConfigError(PolicyOptError, ValueError):
    """A setting or argument has an invalid value."""


class DatasetError(ConfigError):
    """A dataset (trainset/valset) cannot be used as given."""


class ScoreTypeError(PolicyOptError, TypeError):
    """``evaluate`` returned a value that is neither a number nor a ``Score``."""


class EvaluationError(PolicyOptError, RuntimeError):
    """More rollouts failed than ``max_errors`` allows; lists which examples failed and why."""

    def __init__(self, message: str, failures: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.failures: list[tuple[str, str]] = list(failures)


class StopRequested(PolicyOptError, RuntimeError):
    """A stop condition fired in the middle of a batch; the run ends with its result so far.

    Raised by the rollout engine; the run lifecycle turns it into ``stop_reason=reason``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"stop requested: {reason}")
        self.reason = reason


class BudgetExhausted(PolicyOptError, RuntimeError):
    """The rollout budget is spent."""


class LMError(PolicyOptError, RuntimeError):
    """An LM call failed after all its retries."""


class MissingDependencyError(PolicyOptError, ImportError):
    """An optional dependency is missing; the message says what to install."""


class StateError(PolicyOptError, RuntimeError):
    """A run directory cannot be used (corrupt, or written with other settings)."""


def describe(value: Any, limit: int = 60) -> str:
    """Short ``type: repr`` of a value for error messages."""
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(value).__name__} {text}"
