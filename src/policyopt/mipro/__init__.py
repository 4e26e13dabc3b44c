"""MIPRO: bootstrapped demos, grounded instruction proposal and Bayesian search with Optuna."""

from policyopt.mipro.config import PRESETS, MIPROSettings, preset
from policyopt.mipro.demos import Demo, format_prompt
from policyopt.mipro.optimizer import MIPRO, estimate_rollouts, trials_for_budget

__all__ = [
    "MIPRO",
    "PRESETS",
    "Demo",
    "MIPROSettings",
    "estimate_rollouts",
    "format_prompt",
    "preset",
    "trials_for_budget",
]
