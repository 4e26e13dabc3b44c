"""GEPA: reflective prompt evolution with a Pareto population, reflective mutation and merge."""

from typing import Any

from policyopt.gepa.config import GEPASettings
from policyopt.gepa.optimizer import GEPA, estimate
from policyopt.gepa.reflection import COMPACT_TEMPLATE

__all__ = ["GEPA", "SMALL_MODEL_SETTINGS", "GEPASettings", "estimate"]

#: GEPA settings for a very small reflection model such as the embedded SmolLM2-135M:
#: a short feedback-only meta-prompt, and no multi-paragraph proposals.
SMALL_MODEL_SETTINGS: dict[str, Any] = {
    "reflection_template": COMPACT_TEMPLATE,
    "max_prompt_chars": 300,
}
