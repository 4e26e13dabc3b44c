"""GEPA: reflective prompt evolution with a Pareto population, reflective mutation and merge."""

from policyopt.gepa.config import GEPASettings
from policyopt.gepa.optimizer import GEPA, estimate
from policyopt.gepa.spec import SMALL_MODEL_SETTINGS

__all__ = ["GEPA", "SMALL_MODEL_SETTINGS", "GEPASettings", "estimate"]
