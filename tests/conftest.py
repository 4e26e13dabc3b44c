"""Shared test set-up: Hypothesis profiles, litellm kept offline, the modules' order."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# One profile wherever the suite runs (CI included), so the suite's measured time is CI's;
# HYPOTHESIS_PROFILE=deep searches ten times as long (the fuzz tests scale with it too).
settings.register_profile(
    "suite", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "deep", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules marked ``waits`` (mostly timers: rate windows, timeouts) spread evenly among the
    long modules (the integration ones, or the first half when none are collected).

    ./scripts/test hands xdist workers whole modules in collection order: collected last, the
    waiting modules were the suite's tail, cores idle while one worker slept; spread among the
    real-model modules, their waits overlap that CPU work instead.
    """
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::", 1)[0], []).append(item)
    waits = [m for m, group in modules.items() if group[0].get_closest_marker("waits")]
    if not waits:
        return
    others = [m for m in modules if m not in waits]
    # among the integration modules; in a unit-only run among the first half, so that the end
    # is short modules that pack well (the last waiting module was a 22 s tail there)
    long_ones = [m for m in others if m.startswith("tests/integration/")]
    long_ones = long_ones or others[: max(1, len(others) // 2)]
    step = len(long_ones) / (len(waits) + 1)
    after: dict[str, list[str]] = {}
    for i, module in enumerate(waits):
        after.setdefault(long_ones[int(step * (i + 1))], []).append(module)  # < len(long_ones)
    order: list[str] = []
    for module in others:
        order.append(module)
        order.extend(after.get(module, []))
    items[:] = [item for module in order for item in modules[module]]
