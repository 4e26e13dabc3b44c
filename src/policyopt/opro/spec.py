"""OPRO's registry entry (see :mod:`policyopt.registry`)."""

from __future__ import annotations

import math
from typing import Any

from policyopt.opro.config import OPROSettings
from policyopt.opro.config import estimate as opro_estimate
from policyopt.opro.meta import COMPACT_TEMPLATE
from policyopt.opro.optimizer import OPRO
from policyopt.registry import OptimizerSpec

__all__ = ["SMALL_MODEL_LM", "SMALL_MODEL_SETTINGS", "SPEC", "estimate"]

#: OPRO settings for a very small meta model such as the embedded SmolLM2-135M: a short
#: meta-prompt asking for one sentence, few instructions and exemplars in it, short proposals.
SMALL_MODEL_SETTINGS: dict[str, Any] = {
    "meta_template": COMPACT_TEMPLATE,
    "max_history": 5,
    "n_exemplars": 2,
    "max_exemplar_chars": 160,
    "max_prompt_chars": 300,
}

#: LM overrides on top of ``LocalLM.for_reflection()`` (sampled, 48 tokens, stop at a newline):
#: the compact template asks for one sentence, so the one-line answer is kept as it is.
SMALL_MODEL_LM: dict[str, Any] = {}


def estimate(settings: dict[str, Any], budget: int, n_train: int, n_val: int) -> dict[str, Any]:
    """The up-front forecast of a run with ``settings`` (see :func:`policyopt.opro.estimate`)."""
    model = OPROSettings(**{**settings, "max_rollouts": budget})
    plan = opro_estimate(model, n_train, n_val)
    # The keys every spec's estimate shares (see policyopt.registry.Estimator). OPRO steps until
    # its budget (or max_steps, patience, a perfect score) ends it. Its calls are a range: a
    # step costs between its proposals' minibatch runs (exemplars cached, no promotion) and
    # rollouts_per_step_max, and a repeated or unusable proposal is re-asked.
    k, left = model.proposals_per_step, max(0, budget - n_val)
    # every proposal new and paid (the point's upper end), one new one a step (the range's top:
    # the others repeated, each re-asked max_proposal_retries times)
    steps_all_new = left // max(1, k * plan["minibatch"])
    steps_max = left // max(1, plan["minibatch"])
    steps_min = left // max(1, plan["rollouts_per_step_max"])
    if model.max_steps is not None:
        steps_max, steps_min = min(steps_max, model.max_steps), min(steps_min, model.max_steps)
        steps_all_new = min(steps_all_new, model.max_steps)
    # a step the budget cannot pay in full runs with fewer proposals: one call at least
    fewest = max(steps_min * k, 1 if left >= plan["minibatch"] else 0)
    point = round(math.sqrt(fewest * max(fewest, steps_all_new * k)))
    return {
        **plan,
        "rollouts": budget,
        "lm_calls": point,
        "lm_calls_min": fewest,
        "lm_calls_max": steps_max * k * (model.max_proposal_retries + 1),
        "why_a_range": "repeated or unusable proposals are re-asked and cost no rollout, cached "
        "exemplar runs and unpromoted steps cost fewer, so the budget buys more steps; a meta LM "
        "that keeps repeating itself adds calls until the run stalls (10 steps with nothing new)",
    }


SPEC = OptimizerSpec(
    name="opro",
    cls=OPRO,
    settings=OPROSettings,
    lm_param="meta_lm",
    lm_role="meta",
    description="LLM as optimizer: scored-history meta-prompt (arXiv 2309.03409)",
    small_model_settings=SMALL_MODEL_SETTINGS,
    small_model_lm=SMALL_MODEL_LM,
    estimator=estimate,
)
