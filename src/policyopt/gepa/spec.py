"""GEPA's registry entry (see :mod:`policyopt.registry`)."""

from __future__ import annotations

from typing import Any

from policyopt.gepa.config import GEPASettings
from policyopt.gepa.optimizer import GEPA
from policyopt.gepa.reflection import COMPACT_TEMPLATE
from policyopt.registry import OptimizerSpec

__all__ = ["SMALL_MODEL_SETTINGS", "SPEC"]

#: GEPA settings for a very small reflection model such as the embedded SmolLM2-135M:
#: a short feedback-only meta-prompt, and no multi-paragraph proposals.
SMALL_MODEL_SETTINGS: dict[str, Any] = {
    "reflection_template": COMPACT_TEMPLATE,
    "max_prompt_chars": 300,
}

SPEC = OptimizerSpec(
    name="gepa",
    cls=GEPA,
    settings=GEPASettings,
    lm_param="reflection_lm",
    lm_role="reflection",
    description="reflective prompt evolution over a Pareto population (arXiv 2507.19457)",
    small_model_settings=SMALL_MODEL_SETTINGS,
)
