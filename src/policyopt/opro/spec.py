"""OPRO's registry entry (see :mod:`policyopt.registry`)."""

from __future__ import annotations

from typing import Any

from policyopt.opro.config import OPROSettings
from policyopt.opro.meta import COMPACT_TEMPLATE
from policyopt.opro.optimizer import OPRO
from policyopt.registry import OptimizerSpec

__all__ = ["SMALL_MODEL_LM", "SMALL_MODEL_SETTINGS", "SPEC"]

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

SPEC = OptimizerSpec(
    name="opro",
    cls=OPRO,
    settings=OPROSettings,
    lm_param="meta_lm",
    lm_role="meta",
    description="LLM as optimizer: scored-history meta-prompt (arXiv 2309.03409)",
    small_model_settings=SMALL_MODEL_SETTINGS,
    small_model_lm=SMALL_MODEL_LM,
)
