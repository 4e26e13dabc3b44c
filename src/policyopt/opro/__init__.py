"""OPRO: an LLM as the optimizer, reading scored instructions and proposing better ones."""

from policyopt.opro.config import OPROSettings, estimate
from policyopt.opro.optimizer import OPRO
from policyopt.opro.spec import SMALL_MODEL_SETTINGS

__all__ = ["OPRO", "SMALL_MODEL_SETTINGS", "OPROSettings", "estimate"]
