"""OPRO's registry entry (see :mod:`policyopt.registry`)."""

from __future__ import annotations

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
    return opro_estimate(OPROSettings(**{**settings, "max_rollouts": budget}), n_train, n_val)


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
    # any text artifact: versions shown whole, and they may quote what the evaluator showed
    artifact_settings={"meta_template": "artifact", "reject_copies": False},
    # one problem gives every slot the same meta-prompt (the same exemplar): one slot a step
    single_task={"proposals_per_step": 1},
)
