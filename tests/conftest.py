"""Shared test set-up: Hypothesis profiles and litellm kept offline."""

from __future__ import annotations

import os

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
