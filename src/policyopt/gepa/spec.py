"""GEPA's registry entry (see :mod:`policyopt.registry`)."""

from __future__ import annotations

from typing import Any

from policyopt.gepa.budget import gepa_estimate
from policyopt.gepa.config import GEPASettings
from policyopt.gepa.optimizer import GEPA
from policyopt.gepa.reflection import ADVICE_TEMPLATE
from policyopt.registry import OptimizerSpec

__all__ = ["SMALL_MODEL_SETTINGS", "SPEC", "estimate"]

#: GEPA settings for a very small reflection model such as the embedded SmolLM2-135M: a short
#: meta-prompt that shows only the advice the feedback repeats, several samples from each
#: reflection (most of this model's proposals are useless; the minibatch picks the rare good
#: one), no multi-paragraph proposals, and a final choice that must beat the seed by more than
#: noise (on the demo's 5 seeds and 3 other tasks it chose the same prompts as the max).
#: The samples share one call (the API's ``n``), which keeps the calls under the gepa library's
#: share of rollouts; the gains were measured without widened minibatches, so none here.
SMALL_MODEL_SETTINGS: dict[str, Any] = {
    "reflection_template": ADVICE_TEMPLATE,
    "proposals_per_reflection": 4,
    "max_prompt_chars": 300,
    "final_choice": "lower_bound",
    "min_rollouts_per_call": 0,
}


def estimate(settings: dict[str, Any], budget: int, n_train: int, n_val: int) -> dict[str, Any]:
    """The up-front forecast of a run with ``settings`` (see :mod:`policyopt.gepa.budget`)."""
    model = GEPASettings(**{**settings, "max_rollouts": budget})
    return gepa_estimate(model, n_train=n_train, n_val=n_val, n_components=1)


SPEC = OptimizerSpec(
    name="gepa",
    cls=GEPA,
    settings=GEPASettings,
    lm_param="reflection_lm",
    lm_role="reflection",
    description="reflective prompt evolution over a Pareto population (arXiv 2507.19457)",
    small_model_settings=SMALL_MODEL_SETTINGS,
    estimator=estimate,
    # any text artifact: the whole text is rewritten, and it may quote what the evaluator showed
    artifact_settings={"reflection_template": "artifact", "reject_copies": False},
    # one problem shows the same reflection prompt every iteration: two samples (each iteration
    # its own seeds) keep a sampled LM from proposing the same text again and again
    single_task={"proposals_per_reflection": 2},
)
