"""The rollout engine: parallel, cached, budgeted evaluation of prompts on examples."""

from policyopt.rollout.engine import BatchResult, Rollout, RolloutEngine, check_backend

__all__ = ["BatchResult", "Rollout", "RolloutEngine", "check_backend"]
