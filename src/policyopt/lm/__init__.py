"""The LM layer: litellm-backed LM with retries, cache and usage, and the embedded LocalLM."""

from policyopt.lm.base import LM, CallableLM, Completion, LMLike, resolve_lm
from policyopt.lm.limits import RateLimit
from policyopt.lm.local import LocalLM

__all__ = ["LM", "CallableLM", "Completion", "LMLike", "LocalLM", "RateLimit", "resolve_lm"]
