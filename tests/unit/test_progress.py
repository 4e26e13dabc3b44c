"""The progress display: failures (count, last reason) and a time-left estimate that waits."""

from __future__ import annotations

import io

from policyopt.events import BatchDone, RunStarted
from policyopt.progress import ProgressDisplay


def batch(used: int, failed: int = 0, error: str | None = None) -> BatchDone:
    return BatchDone(
        label="",
        n_requested=10,
        n_run=10,
        n_cached=0,
        n_failed=failed,
        n_cut=0,
        rollouts_used=used,
        max_rollouts=300,
        duration_s=1.0,
        last_error=error,
    )


def test_failures_show_with_their_count_and_last_reason() -> None:
    out = io.StringIO()
    display = ProgressDisplay(stream=out, live=False, interval=0.0)
    display(RunStarted(optimizer="gepa", max_rollouts=300, n_train=5, n_val=5))
    display(batch(10, failed=2, error="ValueError: no answer\n  more lines"))
    display(batch(20, failed=1, error="TimeoutError: rollout took over 600 s"))
    display(batch(30))
    last = out.getvalue().splitlines()[-1]
    assert "3 failed (last: TimeoutError: rollout took over 600 s)" in last
    assert display.failures() == ", 3 failed (last: TimeoutError: rollout took over 600 s)"


def test_no_failures_says_nothing_about_them() -> None:
    display = ProgressDisplay(stream=io.StringIO(), live=False)
    display(RunStarted(optimizer="gepa", max_rollouts=300, n_train=5, n_val=5))
    display(batch(10))
    assert "failed" not in display.summary()


def test_time_left_waits_for_a_few_batches_and_some_of_the_budget() -> None:
    display = ProgressDisplay(stream=io.StringIO(), live=False)
    display(RunStarted(optimizer="gepa", max_rollouts=300, n_train=5, n_val=5))
    display(batch(12))  # the seed evaluation on a cold model: no estimate from it
    assert display.eta_seconds() is None and "left" not in display.summary()
    display(batch(13))
    display(batch(14))  # three batches, but under 5% of the budget
    assert display.eta_seconds() is None
    display(batch(40))
    eta = display.eta_seconds()
    assert eta is not None and eta >= 0 and "left" in display.summary()


def test_the_live_bar_shows_failures() -> None:
    out = io.StringIO()
    display = ProgressDisplay(stream=out, live=True)
    display(RunStarted(optimizer="gepa", max_rollouts=300, n_train=5, n_val=5))
    display(batch(10, failed=1, error="KeyError: 'answer'"))
    display.close()
    assert "1 failed (last: KeyError: 'answer')" in out.getvalue()
