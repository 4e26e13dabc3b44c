"""GEPA passes the conformance suite every optimizer must pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from policyopt import GEPA
from policyopt.testing.conformance import CHECKS, Conformance, keyword_reflection_lm

pytestmark = pytest.mark.waits  # see tests/conftest.py


def factory(**kwargs: Any) -> GEPA:
    kwargs.setdefault("reflection_lm", keyword_reflection_lm())
    return GEPA(progress=False, **kwargs)


SUITE = Conformance(factory)


@pytest.mark.parametrize("check", CHECKS)
def test_conformance(check: str, tmp_path: Path) -> None:
    SUITE.run(check, tmp_path)


@pytest.mark.parametrize("merge", [True, False])
def test_resume_without_merge_too(tmp_path: Path, merge: bool) -> None:
    def make(**kwargs: Any) -> GEPA:
        return GEPA(reflection_lm=keyword_reflection_lm(), progress=False, merge=merge, **kwargs)

    Conformance(make, budget=90).check_resume_spends_nothing(tmp_path)


@pytest.mark.usefixtures("sigint_raises")
def test_ctrl_c_while_a_rollout_hangs_ends_in_seconds() -> None:
    """Ctrl-C (SIGINT in the main thread) ends the run with its result while rollouts hang."""
    import _thread
    import threading
    import time

    from policyopt.testing import faults
    from policyopt.testing.conformance import CountingEvaluate, keyword_task

    hanging = faults.Hanging(CountingEvaluate(), {f"t{i}" for i in range(12)})
    program, train, val = keyword_task(evaluate=hanging)  # type: ignore[arg-type]
    timer = threading.Timer(1.0, _thread.interrupt_main)
    # a lost Ctrl-C fails the test in 30 s (the run goes on to another stop reason), not at
    # the 600 s hang guard
    failsafe = threading.Timer(30.0, hanging.release)
    timer.start()
    failsafe.start()
    started = time.monotonic()
    try:
        result = factory(max_rollouts=120, n_jobs=2, timeout=None).optimize(program, train, val)
    finally:
        timer.cancel()
        failsafe.cancel()
        hanging.release()
    assert result.stop_reason == "interrupted"
    assert time.monotonic() - started < 10.0
    assert hanging.faults >= 1 and len(result.candidates) == 1
