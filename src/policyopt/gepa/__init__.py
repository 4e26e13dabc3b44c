"""GEPA: reflective prompt evolution with a Pareto population, reflective mutation and merge."""

from policyopt.gepa.config import GEPASettings
from policyopt.gepa.optimizer import GEPA, estimate

__all__ = ["GEPA", "GEPASettings", "estimate"]
