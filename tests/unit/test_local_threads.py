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
    assert idle_threads(servers) == want


def test_without_a_load_average_all_cores_are_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_load() -> tuple[float, float, float]:
        raise OSError("no load average here")

    monkeypatch.setattr(local.os, "getloadavg", no_load)
    assert idle_threads(1) == len(os.sched_getaffinity(0))
