"""Recorded failures are finished work: a resumed run replays them as recorded (free, through the
error policy in journal order), unless the user asks to pay them again (``retry_failures``), the
last segment stopped on ``evaluate_errors``, or an accepted change of ``evaluate`` may fix them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from policyopt.testing.conformance import CountingEvaluate, _Crash, comparable, keyword_task
from policyopt.testing.scripted import FailsOnSomeExamples
from tests.unit.test_run_kit import OPTIMIZERS, Louder


class Breaking(FailsOnSomeExamples):
    """Fails two thirds of the training examples while ``broken``; crashes (a kill) once
    ``crash_after`` rollouts succeeded; counts every call, failed ones too."""

    def __init__(self, broken: bool = True, crash_after: int | None = None) -> None:
        super().__init__(broken)
        self.crash_after = crash_after
        self.attempts = 0

    def __call__(self, prompt: Any, example: dict[str, str]) -> Any:
        with self._lock:
            self.attempts += 1
        return super().__call__(prompt, example)


class DiesAfter(CountingEvaluate):
    """Every call after the first ``after`` fails (a backend that went down); None: healthy."""

    def __init__(self, after: int | None) -> None:
        super().__init__()
        self.after = after
        self.attempts = 0

    def __call__(self, prompt: Any, example: dict[str, str]) -> Any:
        with self._lock:
            self.attempts += 1
            down = self.after is not None and self.attempts > self.after
        if down:
            raise ConnectionError("backend is down")
        return super().__call__(prompt, example)


def _run(name: str, run_dir: Path, evaluate: CountingEvaluate, **settings: Any) -> Any:
    make, make_lm = OPTIMIZERS[name]
    program, train, val = keyword_task(evaluate=evaluate)
    settings = {
        "max_rollouts": 80,
        "n_jobs": 1,
        "max_error_rate": None,
        "quarantine_after": 2,
        **settings,
    }
    return make(make_lm(), progress=False, run_dir=str(run_dir), **settings).optimize(
        program, train, val
    )


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_finished_run_with_failures_is_replayed_for_free(name: str, tmp_path: Path) -> None:
    """Run again with the same command and run_dir: no rollout is paid (before: every failure
    was paid again, and could end elsewhere), the result is the same and says resume_exact."""
    first = _run(name, tmp_path, Breaking())
    assert first.details["failed_rollouts"] > 0
    # MIPRO asks each training example once (bootstrapping): nothing to quarantine
    assert first.details["quarantined_examples"] or name == "mipro"
    again = Breaking()
    second = _run(name, tmp_path, again)
    assert again.attempts == 0
    assert comparable(second) == comparable(first)
    assert second.details["resume_exact"] is True
    replayed = second.details["replayed_failures"]
    assert replayed == first.details["failed_rollouts"] and second.details["retried_failures"] == 0


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_killed_run_with_failures_resumes_to_the_uninterrupted_one(
    name: str, tmp_path: Path
) -> None:
    """Killed after its first segment recorded failures (and quarantined examples), resumed:
    the same result as the run that was never killed, and no failure paid twice."""
    whole = Breaking()
    reference = _run(name, tmp_path / "whole", whole)
    crashing = Breaking(crash_after=max(1, whole.total // 2))
    with pytest.raises(_Crash):
        _run(name, tmp_path / "killed", crashing)
    rest = Breaking()
    resumed = _run(name, tmp_path / "killed", rest)
    assert crashing.attempts - 1 + rest.attempts == whole.attempts  # the crashed call: lost
    assert comparable(resumed) == comparable(reference)
    assert resumed.details["replayed_failures"] > 0 and resumed.details["retried_failures"] == 0


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_retry_failures_pays_them_again(
    name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = _run(name, tmp_path, Breaking())
    fixed = Breaking(broken=False)
    with caplog.at_level(logging.INFO, logger="policyopt"):
        result = _run(name, tmp_path, fixed, max_rollouts=120, retry_failures=True)
    retried = result.details["retried_failures"]
    assert retried > 0 and fixed.attempts >= retried and result.details["replayed_failures"] == 0
    assert result.details["resume_exact"] is False
    assert result.n_rollouts == first.n_rollouts + fixed.attempts
    assert "will be paid again: retry_failures=True" in caplog.text


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_after_an_evaluate_errors_stop_the_failures_are_paid_again(
    name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The failures are why the run stopped: the user fixes evaluate and resumes (same code,
    same settings): they are paid again and the run goes on."""
    first = _run(name, tmp_path, DiesAfter(30), max_error_rate=0.5)
    assert first.stop_reason == "evaluate_errors"
    fixed = DiesAfter(None)
    with caplog.at_level(logging.INFO, logger="policyopt"):
        result = _run(name, tmp_path, fixed, max_error_rate=0.5)
    assert result.stop_reason != "evaluate_errors"
    assert result.details["retried_failures"] > 0 and result.details["resume_exact"] is False
    assert "stopped on evaluate_errors" in caplog.text
    # a third segment replays the second one's path exactly, paying nothing
    again = DiesAfter(None)
    third = _run(name, tmp_path, again, max_error_rate=0.5)
    assert again.attempts == 0 and comparable(third) == comparable(result)


def test_an_accepted_change_of_evaluate_pays_the_failures_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _run("gepa", tmp_path, Breaking())
    louder = Louder()
    with caplog.at_level(logging.INFO, logger="policyopt"):
        result = _run("gepa", tmp_path, louder, max_rollouts=120, accept_changed=("evaluate",))
    assert result.details["retried_failures"] > 0 and result.details["resume_exact"] is False
    assert "will be paid again: evaluate changed (accept_changed)" in caplog.text


def test_replayed_failures_say_so_in_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = _run("opro", tmp_path, Breaking())
    with caplog.at_level(logging.INFO, logger="policyopt"):
        _run("opro", tmp_path, Breaking())
    lines = [r.getMessage() for r in caplog.records if "recorded failure" in r.getMessage()]
    assert lines == [
        f"{first.details['failed_rollouts']} recorded failures replayed as recorded (pass "
        "retry_failures=True to pay them again)"
    ]
