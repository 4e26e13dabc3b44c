"""MIPRO's registry entry (see :mod:`policyopt.registry`)."""

from __future__ import annotations

from typing import Any

from policyopt.mipro.budget import plan_for_budget
from policyopt.mipro.config import MIPROSettings
from policyopt.mipro.optimizer import MIPRO
from policyopt.registry import OptimizerSpec

__all__ = ["SMALL_MODEL_SETTINGS", "SPEC", "estimate", "fit_to_budget"]

#: MIPRO settings for a very small proposer such as the embedded SmolLM2-135M: instructions
#: restated from the metric's feedback (the grounded proposer's long prompt gave no usable
#: instruction on ``antonyms``), and a final choice that must beat the seed by more than noise.
#: Local model, budget 200, seed 0: antonyms 0.027 -> 0.405, addition 0.000 -> 0.300,
#: language_id 0.100 -> 0.575, extract_phone 0.125 -> 0.125 (the max of val chose a prompt that
#: fell to 0.075 on test).
SMALL_MODEL_SETTINGS: dict[str, Any] = {
    "instruction_proposer": "advice",
    "final_choice": "lower_bound",
}


def fit_to_budget(
    settings: dict[str, Any], budget: int, n_train: int, n_val: int
) -> dict[str, Any]:
    """Check ``settings`` against the budget with the rule MIPRO itself applies when it starts
    (:func:`~policyopt.mipro.budget.plan_for_budget`), and return them unchanged.

    MIPRO plans a budget-only run itself (with the prompt's real component count, and running
    on while cache hits leave budget), so nothing is written in; ``spec.estimate`` shows the
    plan. A budget too small for one trial raises :class:`~policyopt.errors.ConfigError` here,
    before any model call.
    """
    plan_for_budget(settings, budget=budget, n_train=n_train, n_val=n_val)
    return dict(settings)


def estimate(settings: dict[str, Any], budget: int, n_train: int, n_val: int) -> dict[str, Any]:
    """The up-front estimate of a run with ``settings`` (rollouts and proposer LM calls)."""
    return plan_for_budget(settings, budget=budget, n_train=n_train, n_val=n_val).estimate()


SPEC = OptimizerSpec(
    name="mipro",
    cls=MIPRO,
    settings=MIPROSettings,
    lm_param="proposer_lm",
    lm_role="proposer",
    description="bootstrapped demos, grounded instructions, Bayesian search (arXiv 2406.11695)",
    # the tiny model's proposals may come in a fenced block: no one-line stop for MIPRO
    small_model_lm={"stop": None, "max_tokens": 96},
    small_model_settings=SMALL_MODEL_SETTINGS,
    fit_to_budget=fit_to_budget,
    estimator=estimate,
    # demonstrations and its search need examples: one problem alone gives it nothing to do
    single_task=None,
)
