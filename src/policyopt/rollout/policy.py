"""The error policy of every run: failures per example and as a rate over a recent window.

One example that keeps failing is quarantined (scored as a failure from then on, at no cost)
instead of killing the run; the run stops only when the recent failure rate says the backend is
broken, or when an absolute ``max_errors`` cap (off by default) is passed.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from policyopt.errors import ConfigError, EvaluationError, describe
from policyopt.types import ExampleId

__all__ = ["ErrorPolicy"]


@dataclass
class ErrorPolicy:
    """Counts failures; says which examples to quarantine and when the run must stop.

    ``max_error_rate``: stop (None: never) when at least this fraction of the last
    ``error_window`` paid rollouts failed (so a backend that fails from the start stops within
    ``error_window * max_error_rate`` rollouts).
    ``quarantine_after``: failures of one example (any prompts) before it is quarantined;
    ``None`` never quarantines. ``max_errors``: an absolute cap over the run; ``None``: no cap.
    """

    max_error_rate: float | None = 0.5
    error_window: int = 20
    quarantine_after: int | None = 3
    max_errors: int | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)  # (split/example, message)
    quarantined: dict[tuple[str, ExampleId], str] = field(default_factory=dict)
    _window: deque[bool] = field(default_factory=deque)
    _per_example: Counter[tuple[str, ExampleId]] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if self.max_error_rate is not None and (
            isinstance(self.max_error_rate, bool)
            or not isinstance(self.max_error_rate, (int, float))
            or not 0 < self.max_error_rate <= 1
        ):
            raise ConfigError(
                f"The 'max_error_rate' parameter must be in (0, 1] or None; got "
                f"{describe(self.max_error_rate)}."
            )
        if (
            isinstance(self.error_window, bool)
            or not isinstance(self.error_window, int)
            or (self.error_window < 1)
        ):
            raise ConfigError(
                f"The 'error_window' parameter must be an int >= 1; got "
                f"{describe(self.error_window)}."
            )
        if self.quarantine_after is not None and (
            isinstance(self.quarantine_after, bool)
            or not isinstance(self.quarantine_after, int)
            or self.quarantine_after < 1
        ):
            raise ConfigError(
                "The 'quarantine_after' parameter must be an int >= 1 or None; got "
                f"{describe(self.quarantine_after)}."
            )
        if self.max_errors is not None and (
            isinstance(self.max_errors, bool)
            or not isinstance(self.max_errors, int)
            or self.max_errors < 0
        ):
            raise ConfigError(
                "The 'max_errors' parameter must be an int >= 0 or None; got "
                f"{describe(self.max_errors)}."
            )
        self._window = deque(maxlen=self.error_window)

    @property
    def trip_count(self) -> int | None:
        """Failures in the window that stop the run (None: the rate never stops it)."""
        if self.max_error_rate is None:
            return None
        return max(1, math.ceil(self.max_error_rate * self.error_window))

    def record(self, split: str, example_id: ExampleId, message: str | None) -> None:
        """Count one paid rollout: ``message`` is its error, or None for a success."""
        self._window.append(message is not None)
        if message is None:
            return
        self.failures.append((f"{split}/{example_id}", message))
        where = (split, example_id)
        self._per_example[where] += 1
        if self.quarantine_after is not None and self._per_example[where] >= self.quarantine_after:
            self.quarantined.setdefault(where, message)

    def record_unpaid(self, split: str, example_id: ExampleId, message: str) -> None:
        """A rollout that failed without calling evaluate (no free slot): counts toward the rate."""
        self._window.append(True)
        self.failures.append((f"{split}/{example_id}", message))

    def is_quarantined(self, split: str, example_id: ExampleId) -> bool:
        """True once the example has failed ``quarantine_after`` times."""
        return (split, example_id) in self.quarantined

    def breach(self) -> EvaluationError | None:
        """The error that stops the run, or None while failures are tolerable."""
        recent = sum(self._window)
        trip = self.trip_count
        if trip is not None and recent >= trip:
            why = (
                f"{recent} of the last {len(self._window)} rollouts failed "
                f"(max_error_rate={self.max_error_rate:g} over error_window={self.error_window}):"
                " evaluate() or its backend looks broken"
            )
        elif self.max_errors is not None and len(self.failures) > self.max_errors:
            why = f"{len(self.failures)} rollouts failed, more than max_errors={self.max_errors}"
        else:
            return None
        where, last = self.failures[-1]
        # the first line stands alone (a log line, a CLI error); the listing follows it
        return EvaluationError(
            f"{why}; last: {where}: {last[:300]}. Fix evaluate(), or raise max_error_rate / "
            "max_errors.\nFailures:\n" + _listing(self.failures),
            self.failures,
        )


def _listing(failures: Sequence[tuple[str, str]], limit: int = 10) -> str:
    shown = "\n".join(f"  - {where}: {message[:300]}" for where, message in failures[-limit:])
    more = len(failures) - limit
    return shown + (f"\n  ... and {more} earlier" if more > 0 else "")
