"""Threads per local llama.cpp server: the idle cores, shared, never fewer than one."""

from __future__ import annotations

import os

import pytest

from policyopt.lm import local
from policyopt.lm.local import idle_threads


@pytest.mark.parametrize(
    ("cores", "load", "servers", "want"),
    [
        (2, 0.0, 1, 2),  # a quiet two-core machine, one server: both cores
        (2, 0.0, 4, 1),  # more servers than cores: one each
        (2, 5.0, 1, 1),  # a busy machine: a second thread would spin waiting for the first
        (16, 4.2, 4, 3),  # twelve idle cores over four servers
        (16, 40.0, 2, 1),
        (8, 0.4, 2, 4),
    ],
)
def test_threads_follow_the_idle_cores(
    monkeypatch: pytest.MonkeyPatch, cores: int, load: float, servers: int, want: int
) -> None:
    monkeypatch.setattr(local.os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setattr(local.os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(local, "_runnable_now", lambda: 1)  # only the caller runs right now
    assert idle_threads(servers) == want


@pytest.mark.parametrize(("load", "runnable", "want"), [(0.0, 5, 1), (0.0, 2, 1), (3.0, 1, 1)])
def test_work_that_just_started_counts_before_the_load_average_sees_it(
    monkeypatch: pytest.MonkeyPatch, load: float, runnable: int, want: int
) -> None:
    """The 1-minute load average lags: a suite's workers that started a second ago are already
    runnable, and a second thread per server would only spin beside them."""
    monkeypatch.setattr(local.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(local.os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(local, "_runnable_now", lambda: runnable)
    assert idle_threads(1) == want


def test_the_runnable_count_is_read_from_the_kernel() -> None:
    if not os.path.exists("/proc/loadavg"):
        pytest.skip("no /proc/loadavg (not Linux)")
    assert local._runnable_now() >= 1  # this test's own thread is running


def test_without_a_load_average_all_cores_are_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_load() -> tuple[float, float, float]:
        raise OSError("no load average here")

    monkeypatch.setattr(local.os, "getloadavg", no_load)
    monkeypatch.setattr(local, "_runnable_now", lambda: 0)  # nor a /proc/loadavg
    assert idle_threads(1) == len(os.sched_getaffinity(0))
