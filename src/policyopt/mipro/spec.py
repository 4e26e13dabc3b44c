"""MIPRO's registry entry (see :mod:`policyopt.registry`)."""

from __future__ import annotations

from typing import Any

from policyopt.mipro.config import MIPROSettings
from policyopt.mipro.optimizer import MIPRO, trials_for_budget
from policyopt.registry import OptimizerSpec

__all__ = ["SPEC", "fit_to_budget"]

#: what MIPRO proposes when only a budget is given: 4 candidates, minibatches of 10
BUDGET_DEFAULTS: dict[str, Any] = {"num_candidates": 4, "minibatch_size": 10}


def fit_to_budget(
    settings: dict[str, Any], budget: int, n_train: int, n_val: int
) -> dict[str, Any]:
    """Fill in ``num_trials`` (and candidates, minibatch) so the written estimate fits the budget.

    ``auto=`` or explicit ``num_candidates`` and ``num_trials`` win when given.
    """
    if settings.get("auto") is not None or (
        settings.get("num_candidates") is not None and settings.get("num_trials") is not None
    ):
        return dict(settings)
    planned = {**BUDGET_DEFAULTS, **settings}
    fit = {k: v for k, v in planned.items() if k not in ("num_trials", "max_rollouts")}
    planned["num_trials"] = trials_for_budget(budget, n_train, n_val, **fit)
    return planned


SPEC = OptimizerSpec(
    name="mipro",
    cls=MIPRO,
    settings=MIPROSettings,
    lm_param="proposer_lm",
    lm_role="proposer",
    description="bootstrapped demos, grounded instructions, Bayesian search (arXiv 2406.11695)",
    # the tiny model's proposals may come in a fenced block: no one-line stop for MIPRO
    small_model_lm={"stop": None, "max_tokens": 96},
    fit_to_budget=fit_to_budget,
)
